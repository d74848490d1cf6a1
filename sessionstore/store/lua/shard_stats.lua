-- shard_stats: counts of one shard in O(log n): live and overdue sessions from the
-- expiry index, the oldest overdue deadline (sweeper lag), and lifetime counters.
-- KEYS: expiry, stats (of one shard)
-- ARGV: (none)
-- Reply: {now, live, overdue, oldest_overdue_deadline_or_'', field, value, ...}
local now = now_ms()
local live = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local overdue = redis.call('ZCOUNT', KEYS[1], '-inf', now)
local oldest = ''
if overdue > 0 then oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] end
local reply = {now, live, overdue, oldest}
for _, v in ipairs(redis.call('HGETALL', KEYS[2])) do reply[#reply + 1] = v end
return reply
