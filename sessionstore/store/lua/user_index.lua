-- user_index: a user's session ids scored by absolute deadline (ms). Never the
-- source of truth: entries past their deadline are pruned on every call, ids of
-- ended sessions are dropped by the reader, and the repair job rebuilds it.
-- KEYS: the user's index
-- ARGV: mode, ...
--   'add', session_id, lifetime_ms        -> {'ok'}
--   'move', old_id, new_id, deadline_ms   -> {'ok'}   (rotate, resume: the new id at
--                                                      its deadline, whether or not
--                                                      the old entry is still there)
--   'remove', session_id...               -> {'ok'}
--   'list', offset, count                 -> {'ok', id, ...}
local key, mode = KEYS[1], ARGV[1]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if mode == 'add' then
  redis.call('ZADD', key, now + tonumber(ARGV[3]), ARGV[2])
elseif mode == 'move' then
  redis.call('ZREM', key, ARGV[2])
  if tonumber(ARGV[4]) > now then redis.call('ZADD', key, tonumber(ARGV[4]), ARGV[3]) end
elseif mode == 'remove' then
  for i = 2, #ARGV do redis.call('ZREM', key, ARGV[i]) end
elseif mode == 'list' then
  local first = tonumber(ARGV[2])
  local reply = {'ok'}
  for _, id in ipairs(redis.call('ZRANGE', key, first, first + tonumber(ARGV[3]) - 1)) do
    reply[#reply + 1] = id
  end
  return reply
end
-- The index lives as long as its longest-lived entry.
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', key, tonumber(last[2])) end
return {'ok'}
