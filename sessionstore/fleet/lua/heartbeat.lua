-- heartbeat: one worker says it is alive, with what it has done.
-- KEYS: the worker's hash (KeySpace.worker)
-- ARGV: ttl_ms, fresh ('1' on the worker's first beat: the hash is started over and
--       started_at set), then field/value pairs (status, host, pid, jobs_run, last_sweep...)
-- Reply: now (ms), the beat's Redis time
local key = KEYS[1]
local now = now_ms()
if ARGV[2] == '1' then
  redis.call('DEL', key)
  redis.call('HSET', key, 'started_at', now)
end
local fields = {'HSET', key, 'last_beat', now}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call(unpack(fields))
redis.call('PEXPIRE', key, tonumber(ARGV[1]))
return now
