-- touch: slide an active session's idle deadline.
-- KEYS: record, tomb (of the session)
-- ARGV: none
-- Reply: idle_end (the new idle deadline, ms: a number, which Redis sends on as it is,
--        where a table is turned into an array element by element)
--      | {'gone', status, superseded_by} | {'missing'}
local k = session_keys(1)
local now = now_ms()
local state, f = record_state(k, now)
if state ~= 'active' then return gone_reply(k, state) end
return slide(k, now, f)
