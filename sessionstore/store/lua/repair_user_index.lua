-- repair_user_index: fix one user's index from what the session records say.
--   'add'    -> ids of active records naming this user that were missing are added;
--               entries already there keep their score (rotation keeps the deadline)
--   'remove' -> ids whose session record is gone are dropped
-- Used only by the repair job. Entries past their deadline are pruned as on every call.
-- KEYS: the user's index
-- ARGV: 'add', then pairs of session_id, absolute_deadline_ms | 'remove', then session ids
-- Reply: number of entries added or removed
local key, mode = KEYS[1], ARGV[1]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local changed = 0
if mode == 'add' then
  for i = 2, #ARGV, 2 do
    if tonumber(ARGV[i + 1]) > now then
      changed = changed + redis.call('ZADD', key, 'NX', ARGV[i + 1], ARGV[i])
    end
  end
elseif mode == 'remove' then
  for i = 2, #ARGV do changed = changed + redis.call('ZREM', key, ARGV[i]) end
end
-- The index lives as long as its longest-lived entry (as user_index.lua keeps it).
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', key, tonumber(last[2])) end
return changed
