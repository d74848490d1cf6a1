-- get: read a session without side effects.
-- KEYS: the session's nine keys
-- ARGV: (none)
-- Reply: {'record', now, live_requests, live_connections, field, value, ...}
--      | {'tomb', now, field, value, ...} | {'missing'}
local k = session_keys(1)
local now = now_ms()
if redis.call('EXISTS', k.record) == 1 then return record_reply(k, now, 'record') end
local tomb = redis.call('HGETALL', k.tomb)
if #tomb > 0 then
  local reply = {'tomb', now}
  for i = 1, #tomb do reply[#reply + 1] = tomb[i] end
  return reply
end
return {'missing'}
