-- end: expire or close (delete) one session now.
-- KEYS: the session's nine keys
-- ARGV: session_id, status ('expired' | 'closed'), event ('expired' | 'deleted'),
--       reason, retention_ms, events_maxlen
-- Reply: {'ok', user_id} | {'gone', status, superseded_by} (already ended) | {'missing'}
local k = session_keys(1)
local now = now_ms()
if redis.call('EXISTS', k.record) == 0 then return gone_reply(k, false) end
local user = redis.call('HGET', k.record, 'user_id') or ''
end_session(k, ARGV[1], now, ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], '')
return {'ok', user}
