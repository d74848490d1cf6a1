-- lease: take or renew a request or connection lease on an active session.
-- Expired leases (of crashed replicas) are reclaimed first, so they never count.
-- Taking a lease is activity: the idle deadline slides.
-- KEYS: the session's nine keys
-- ARGV: session_id, kind ('requests' | 'conns'), lease_id, lease_ms, limit (0 = none),
--       grace_ms, mode ('take' | 'renew'), read ('1': also return the session record)
-- Reply: {'ok', live_leases, deadline[, now, live_requests, live_connections, field, value, ...]}
--      | {'limit', live_leases} | {'lost'} | {'gone', ...} | {'missing'}
local k = session_keys(1)
local now = now_ms()
local state = record_state(k, now)
if state ~= 'active' then return gone_reply(k, state) end
local key = k[ARGV[2]]
local lease_ms, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local held = redis.call('ZSCORE', key, ARGV[3])
if ARGV[7] == 'renew' and not held then return {'lost'} end
local live = redis.call('ZCARD', key)
if not held then
  if limit > 0 and live >= limit then return {'limit', live} end
  live = live + 1
end
local deadline = now + lease_ms
redis.call('ZADD', key, deadline, ARGV[3])
if redis.call('PTTL', key) < lease_ms then redis.call('PEXPIRE', key, lease_ms) end
slide(k, ARGV[1], now, tonumber(ARGV[6]))
local reply = {'ok', live, deadline}
if ARGV[8] == '1' then
  -- The caller wants the session too (a middleware): save it a second round trip.
  local record = record_reply(k, now, 'record')
  for i = 2, #record do reply[#reply + 1] = record[i] end
end
return reply
