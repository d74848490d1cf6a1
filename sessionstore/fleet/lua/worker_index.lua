-- worker_index: note a worker's last beat in the index of workers, forgetting
-- workers silent for longer than the heartbeat TTL (the index stays bounded).
-- Separate from heartbeat.lua: on Redis Cluster the index is in another slot.
-- KEYS: the worker index (KeySpace.worker_index)
-- ARGV: worker_id, forget_after_ms
-- Reply: now (ms)
local key, forget = KEYS[1], tonumber(ARGV[2])
local now = now_ms()
redis.call('ZADD', key, now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - forget)
redis.call('PEXPIRE', key, forget)
return now
