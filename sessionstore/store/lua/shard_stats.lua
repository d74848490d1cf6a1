-- shard_stats: counts of one shard from its expiry index (time buckets, see the
-- prelude's index_add): entries held (the sum of the bucket counts), those due (the
-- buckets that start by now: whole when they end by then, else by ZCOUNT), the oldest
-- due deadline (sweeper lag), and lifetime counters.
-- KEYS: expiry, stats (of one shard)
-- ARGV: (none)
-- Reply: {now, live, overdue, oldest_overdue_deadline_or_'', field, value, ...}
local now = now_ms()
local overdue, oldest = index_due(KEYS[1], now)
local reply = {now, index_size(KEYS[1]) - overdue, overdue, oldest and whole(oldest) or ''}
for _, v in ipairs(redis.call('HGETALL', KEYS[2])) do reply[#reply + 1] = v end
return reply
