-- create: write a new session record and emit `created`.
-- KEYS: record, tomb, expiry, stats, events (of the session)
-- ARGV: session_id, idle_ms, absolute_ms, grace_ms, events_maxlen, user_id,
--       conversation_id, metadata_json, then state pairs (name, json)...
-- Reply: {'ok', now} | {'exists'} (id collision: the caller draws a new id)
local k = session_keys(1)
local session_id = ARGV[1]
if redis.call('EXISTS', k.record, k.tomb) > 0 then return {'exists'} end
local now = now_ms()
local spec = {
  idle_ms = tonumber(ARGV[2]), absolute_ms = tonumber(ARGV[3]), grace_ms = tonumber(ARGV[4]),
  user_id = ARGV[6], conversation_id = ARGV[7], metadata = ARGV[8], resumed_from = '',
}
local state = {}
for i = 9, #ARGV do state[#state + 1] = ARGV[i] end
write_session(k, session_id, now, spec, state)
emit(k.events, ARGV[5], 'created', session_id, now, {'user_id', spec.user_id})
return {'ok', now}
