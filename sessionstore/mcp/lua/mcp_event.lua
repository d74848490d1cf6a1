-- mcp_event: append one event to an MCP event stream of a session, and say so in the
-- session's record (`extras`), so ending the session drops the stream (end_session
-- looks up a session's streams only when its record has that field).
-- RedisEventStore sends its first event of a session this way and the later ones as
-- plain XADD + PEXPIRE: the field stays until the record ends.
-- KEYS: the session's record, the stream
-- ARGV: max_events (the stream is capped near it), ttl_ms, then the entry's field/value pairs
-- Reply: the entry id
-- Only an existing record is marked: HSET on a missing key would create a record for
-- a session that has ended (its stream is then left to its TTL, as before).
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'extras', 1) end
return id
