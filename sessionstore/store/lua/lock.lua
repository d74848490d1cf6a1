-- lock: a leased lock on a session with a fencing number.
-- acquire: free or already ours -> granted; a new grant takes the next fence from
--          the session record, so fences only grow. Needs an active session.
-- renew:   ours -> lease extended.      release: ours -> deleted.
-- KEYS: record, tomb, lock (of the session)
-- ARGV: session_id, mode ('acquire' | 'renew' | 'release'), owner, ttl_ms
-- Reply: {'ok', fence} | {'held', pttl_ms} | {'not_owner'} | {'gone', ...} | {'missing'}
local k = session_keys(1)
local mode, owner, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local current = redis.call('HMGET', k.lock, 'owner', 'fence')
if mode ~= 'acquire' then
  if current[1] ~= owner then return {'not_owner'} end
  if mode == 'release' then redis.call('DEL', k.lock) else redis.call('PEXPIRE', k.lock, ttl) end
  return {'ok', tonumber(current[2])}
end
local now = now_ms()
local state = record_state(k, now)
if state ~= 'active' then return gone_reply(k, state) end
if current[1] and current[1] ~= owner then return {'held', redis.call('PTTL', k.lock)} end
local fence = tonumber(current[2])
if not current[1] then
  fence = redis.call('HINCRBY', k.record, 'fence', 1)
  redis.call('HSET', k.lock, 'owner', owner, 'fence', fence)
end
redis.call('PEXPIRE', k.lock, ttl)
return {'ok', fence}
