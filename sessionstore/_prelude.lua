-- sessionstore prelude: prepended to every script by sessionstore._scripts.
--
-- Time always comes from the Redis server (TIME), never from a replica's clock.
-- Single-session scripts take the session's eleven keys, in the order of
-- SessionKeys.ordered(): record, tomb, requests, conns, lock, upstreams,
-- expiry, stats, events, mcp, mcpget (the MCP event streams). All share one hash tag, so each script stays on one
-- Redis Cluster slot.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function session_keys(first)
  local i = first or 1
  return {
    record = KEYS[i], tomb = KEYS[i + 1], requests = KEYS[i + 2], conns = KEYS[i + 3],
    lock = KEYS[i + 4], upstreams = KEYS[i + 5], expiry = KEYS[i + 6], stats = KEYS[i + 7],
    events = KEYS[i + 8], mcp = KEYS[i + 9], mcpget = KEYS[i + 10],
  }
end

-- Append an event to a shard's stream, capped near maxlen. Returns the entry id.
local function emit(stream, maxlen, kind, session_id, now, extra)
  local args = {'XADD', stream, 'MAXLEN', '~', maxlen, '*',
                'kind', kind, 'session_id', session_id, 'at', now}
  for i = 1, #extra do args[#args + 1] = extra[i] end
  return redis.call(unpack(args))
end

-- 'active', 'overdue' (a deadline passed, not yet swept), or false (no record).
local function record_state(k, now)
  local d = redis.call('HMGET', k.record, 'idle_deadline', 'absolute_deadline')
  if not d[1] then return false end
  if now >= math.min(tonumber(d[1]), tonumber(d[2])) then return 'overdue' end
  return 'active'
end

-- The reply for an id with no usable record.
local function gone_reply(k, state)
  if state == 'overdue' then return {'gone', 'expired', ''} end
  local t = redis.call('HMGET', k.tomb, 'status', 'superseded_by')
  if t[1] then return {'gone', t[1], t[2] or ''} end
  return {'missing'}
end

-- Slide the idle deadline of an active session; keep its index entry and TTL in step.
local function slide(k, session_id, now, grace_ms)
  local f = redis.call('HMGET', k.record, 'idle_timeout_ms', 'absolute_deadline')
  local idle = now + tonumber(f[1])
  local deadline = math.min(idle, tonumber(f[2]))
  redis.call('HSET', k.record, 'last_activity', now, 'idle_deadline', idle)
  redis.call('ZADD', k.expiry, deadline, session_id)
  redis.call('PEXPIREAT', k.record, deadline + grace_ms)
  return idle
end

-- Write a new session record. spec: idle_ms, absolute_ms, grace_ms, user_id,
-- conversation_id, metadata, resumed_from; state: flat {name, json, ...}.
local function write_session(k, session_id, now, spec, state)
  local absolute = now + spec.absolute_ms
  local idle = now + spec.idle_ms
  local deadline = math.min(idle, absolute)
  local bytes = 0
  local fields = {'HSET', k.record,
    'id', session_id, 'status', 'active', 'user_id', spec.user_id,
    'conversation_id', spec.conversation_id, 'created_at', now, 'last_activity', now,
    'idle_timeout_ms', spec.idle_ms, 'idle_deadline', idle, 'absolute_deadline', absolute,
    'version', 1, 'fence', 0, 'metadata', spec.metadata, 'resumed_from', spec.resumed_from,
    'state_count', #state / 2}
  for i = 1, #state, 2 do
    fields[#fields + 1] = 'a:' .. state[i]
    fields[#fields + 1] = state[i + 1]
    bytes = bytes + string.len(state[i + 1])
  end
  fields[#fields + 1] = 'state_bytes'
  fields[#fields + 1] = bytes
  redis.call(unpack(fields))
  redis.call('PEXPIREAT', k.record, deadline + spec.grace_ms)
  redis.call('ZADD', k.expiry, deadline, session_id)
  redis.call('HINCRBY', k.stats, 'created', 1)
end

-- End a session: tombstone kept for retention_ms; record, leases, lock, upstream
-- records, MCP event streams and expiry entry dropped; counted; event emitted. All in the caller's script.
local function end_session(k, session_id, now, status, event, reason, retention_ms, maxlen,
                           superseded_by)
  local f = redis.call('HMGET', k.record, 'user_id', 'conversation_id', 'created_at', 'metadata')
  redis.call('DEL', k.tomb, k.record, k.requests, k.conns, k.lock, k.upstreams, k.mcp, k.mcpget)
  redis.call('HSET', k.tomb, 'status', status, 'reason', reason, 'ended_at', now,
    'user_id', f[1] or '', 'conversation_id', f[2] or '', 'created_at', f[3] or '',
    'metadata', f[4] or '{}', 'superseded_by', superseded_by)
  redis.call('PEXPIRE', k.tomb, retention_ms)
  redis.call('ZREM', k.expiry, session_id)
  redis.call('HINCRBY', k.stats, status, 1)
  emit(k.events, maxlen, event, session_id, now, {'reason', reason, 'user_id', f[1] or ''})
end

-- A session record as a reply: {tag, now, live_requests, live_connections, field, value, ...}
local function record_reply(k, now, tag)
  local reply = {tag, now, redis.call('ZCOUNT', k.requests, '(' .. now, '+inf'),
                 redis.call('ZCOUNT', k.conns, '(' .. now, '+inf')}
  for _, v in ipairs(redis.call('HGETALL', k.record)) do reply[#reply + 1] = v end
  return reply
end

-- Why an overdue session is due: its idle deadline or its absolute lifetime.
local function overdue_reason(k)
  local d = redis.call('HMGET', k.record, 'idle_deadline', 'absolute_deadline')
  if tonumber(d[2]) <= tonumber(d[1]) then return 'lifetime' end
  return 'idle'
end
