-- get: read a session without side effects.
-- KEYS: the session's nine keys
-- ARGV: (none)
-- Reply: {'record', now, live_requests, live_connections, field, value, ...}
--      | {'tomb', now, field, value, ...} | {'missing'}
local k = session_keys(1)
local now = now_ms()
local record = redis.call('HGETALL', k.record)
if #record > 0 then
  local requests = redis.call('ZCOUNT', k.requests, '(' .. now, '+inf')
  local conns = redis.call('ZCOUNT', k.conns, '(' .. now, '+inf')
  local reply = {'record', now, requests, conns}
  for i = 1, #record do reply[#reply + 1] = record[i] end
  return reply
end
local tomb = redis.call('HGETALL', k.tomb)
if #tomb > 0 then
  local reply = {'tomb', now}
  for i = 1, #tomb do reply[#reply + 1] = tomb[i] end
  return reply
end
return {'missing'}
