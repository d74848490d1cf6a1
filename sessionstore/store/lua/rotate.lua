-- rotate: move an active session to a new id (session-fixation defence).
-- Same data (its leases with it), lock and upstream records under the new id; the old id
-- answers `rotated` (superseded_by = new id) for the retention period.
-- KEYS: the old session's nine keys, then the new session's nine keys (same shard)
-- ARGV: old_id, new_id, retention_ms, events_maxlen
-- Reply: {'ok', user_id, life_end} | {'exists'} | {'gone', ...} | {'missing'}
local old, new = session_keys(1), session_keys(10)
local old_id, new_id = ARGV[1], ARGV[2]
local now = now_ms()
-- One read of the record: its deadlines, what the tombstone keeps, and `extras`.
local state, f = record_state(old, now, 'user_id', 'conversation_id', 'created', 'extras', 'due')
if state ~= 'active' then return gone_reply(old, state) end
if redis.call('EXISTS', new.record, new.tomb) > 0 then return {'exists'} end
-- Upstream records and MCP event streams exist only if the record says so (`extras`,
-- see end_session); the field moves with the record.
local extras = f[7]
local moved = {'record', 'lock'}
if extras then moved[#moved + 1] = 'upstreams' end
for _, name in ipairs(moved) do
  if redis.call('EXISTS', old[name]) == 1 then redis.call('RENAME', old[name], new[name]) end
end
redis.call('HSET', new.record, 'rotated_from', old_id)
local user, conversation = f[4] or '', f[5] or ''
-- The new id takes the old one's expiry entry, in the same bucket at the same deadline
-- (the record, renamed, still says that deadline), so the bucket's count stays.
local deadline = entry_deadline(f[8], f[6], f[3], f[2])
if not (deadline and index_rename(old.expiry, old_id, new_id, deadline)) then
  index_add_due(new.expiry, new.record, new_id, math.min(f[1], f[2]))
end
-- The MCP event streams are not carried: a rotated id ends the MCP session (clients
-- start a new one), so its events can never be asked for again.
if extras then redis.call('DEL', old.mcp, old.mcpget) end
redis.call('HSET', old.tomb, 'status', 'rotated', 'reason', 'rotated', 'ended_at', now,
  'user_id', user, 'conversation_id', conversation, 'created_at', f[6], 'metadata', '{}',
  'superseded_by', new_id)
redis.call('PEXPIRE', old.tomb, tonumber(ARGV[3]))
redis.call('HINCRBY', old.stats, 'rotated', 1)
emit(old.events, ARGV[4], 'rotated', old_id, now, {'new_session_id', new_id, 'user_id', user})
return {'ok', user, tonumber(f[2])}
