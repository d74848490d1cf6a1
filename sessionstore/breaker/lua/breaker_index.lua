-- breaker_index: note breaker names as used now, drop names unused for longer than
-- the retention, and list the rest.
-- KEYS: the breaker index sorted set
-- ARGV: retention_ms, name...
-- Reply: {name, last_used_ms, ...} of every name still in the index
local now = now_ms()
local retention = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - retention)
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], retention) end
return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
