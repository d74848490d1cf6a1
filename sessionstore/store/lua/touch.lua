-- touch: slide an active session's idle deadline.
-- KEYS: record, tomb (of the session)
-- ARGV: session_id
-- Reply: {'ok', now, idle_end} | {'gone', status, superseded_by} | {'missing'}
local k = session_keys(1)
local now = now_ms()
local state, f = record_state(k, now)
if state ~= 'active' then return gone_reply(k, state) end
return {'ok', now, slide(k, now, f)}
