-- resume: continue a session after a disconnect.
--   active           -> touch it and return it
--   overdue record   -> expire it now, issue a new session linked both ways
--   expired tomb     -> issue a new session linked both ways (or point at the
--                       successor if one was already issued)
--   closed / rotated -> refused: neither may be resumed
-- Carried over to the new session: user_id, conversation_id, metadata. State is not.
-- KEYS: the old session's nine keys, then the new session's nine keys (same shard)
-- ARGV: old_id, new_id, grace_ms, idle_ms, absolute_ms, retention_ms, events_maxlen
-- Reply: {'active' | 'resumed', now, session_id, {field, value, ...}}
--      | {'superseded', successor_id}
--      | {'gone', status, superseded_by} | {'missing'}
local old, new = session_keys(1), session_keys(10)
local old_id, new_id = ARGV[1], ARGV[2]
local grace, retention, maxlen = tonumber(ARGV[3]), tonumber(ARGV[6]), ARGV[7]
local now = now_ms()
local state, f = record_state(old, now)
if state == 'active' then
  slide(old, now, f)
  return record_reply(old, now, 'active', old_id)
end
if state == 'overdue' then
  end_session(old, old_id, now, 'expired', 'expired', overdue_reason(old), retention, maxlen, new_id)
else
  local t = redis.call('HMGET', old.tomb, 'status', 'superseded_by')
  if not t[1] then return {'missing'} end
  if t[1] ~= 'expired' then return {'gone', t[1], t[2] or ''} end
  if t[2] and t[2] ~= '' then return {'superseded', t[2]} end
  redis.call('HSET', old.tomb, 'superseded_by', new_id)
end
local carried = redis.call('HMGET', old.tomb, 'user_id', 'conversation_id', 'metadata')
local spec = {
  idle_ms = tonumber(ARGV[4]), absolute_ms = tonumber(ARGV[5]), grace_ms = grace,
  user_id = carried[1], conversation_id = carried[2], metadata = carried[3],
  resumed_from = old_id,
}
write_session(new, new_id, now, spec, {})
redis.call('HINCRBY', new.stats, 'resumed', 1)
emit(new.events, maxlen, 'resumed', new_id, now, {'resumed_from', old_id, 'user_id', carried[1]})
return record_reply(new, now, 'resumed', new_id)
