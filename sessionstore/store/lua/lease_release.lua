-- lease_release: return a request or connection lease; ending a request is
-- activity, so an active session's idle deadline slides.
-- KEYS: the session's nine keys
-- ARGV: session_id, kind ('requests' | 'conns'), lease_id, grace_ms
-- Reply: {'ok', removed (0 | 1)}
local k = session_keys(1)
local now = now_ms()
local removed = redis.call('ZREM', k[ARGV[2]], ARGV[3])
if record_state(k, now) == 'active' then slide(k, ARGV[1], now, tonumber(ARGV[4])) end
return {'ok', removed}
