-- global_lease: the fleet-wide request count, as leases with deadlines.
-- KEYS: the global requests sorted set
-- ARGV: mode ('take' | 'renew' | 'release'), member, lease_ms, limit (0 = none)
-- Reply: {'ok', live} | {'limit', live} | {'lost'}
local key, mode, member = KEYS[1], ARGV[1], ARGV[2]
if mode == 'release' then
  return {'ok', redis.call('ZREM', key, member)}
end
local now = now_ms()
local lease_ms, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local held = redis.call('ZSCORE', key, member)
if mode == 'renew' and not held then return {'lost'} end
local live = redis.call('ZCARD', key)
if not held then
  if limit > 0 and live >= limit then return {'limit', live} end
  live = live + 1
end
redis.call('ZADD', key, now + lease_ms, member)
if redis.call('PTTL', key) < lease_ms then redis.call('PEXPIRE', key, lease_ms) end
return {'ok', live}
