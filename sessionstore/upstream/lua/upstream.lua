-- upstream: register, update or remove one upstream connection record of a session.
-- A record is one JSON field (named after the upstream) of the session's upstreams
-- hash; end and sweep delete the hash with the session (a register sets the record's
-- `extras` field, which tells them to), rotate moves it. Writes to an
-- ended session are refused, so a late reconnect job cannot resurrect its records.
-- Times in the record are Redis time in ms. The hash lives until the session's
-- absolute deadline + grace at most. A change of `state` emits an `upstream` event.
-- Fleet-wide counters go to the shard's stats hash (read by /metrics and health, see
-- sessionstore/upstream/_totals.py): upstream_registered, upstream_removed,
-- upstream_failed_attempts (each `attempts` increment), upstream_reconnected
-- (reconnecting -> connected) and upstream_to_<state> (every change of state).
-- KEYS: the session's nine keys
-- ARGV: session_id, op ('register' | 'update' | 'remove'), name, grace_ms, events_maxlen,
--       max_records, fields_json (register: the record; update: fields to set; remove: '{}'),
--       stamp (comma-separated fields set to Redis time, '' = none),
--       attempts ('' = keep | 'incr' | 'reset'), next_in_ms ('' = keep | 'clear' | ms from now),
--       only_states (update only if the current state is one of these, comma-separated; '' = any)
-- The record's `spec` is its last field, kept as the text the caller sent and
-- never re-encoded (cjson would round numbers to 14 digits). Everything is
-- decoded and checked before the first write (counters included).
-- Reply: {'ok', now, record_json} | {'unknown'} (update/remove of an unregistered name)
--      | {'state', current_state} (only_states not met) | {'too_many', count}
--      | {'gone', status, superseded_by} | {'missing'}
-- A record's text as (everything but the spec, decoded; the spec's own text).
local function split_spec(text)
  local at = string.find(text, ',"spec":', 1, true)
  if at and string.sub(text, -1) == '}' then
    local spec = string.sub(text, at + 8, -2)
    local ok, rest = pcall(cjson.decode, string.sub(text, 1, at - 1) .. '}')
    if ok and pcall(cjson.decode, spec) then return rest, spec end
  end
  -- Written before the spec was kept as text: decode it all, as then.
  local record = cjson.decode(text)
  local spec = cjson.encode(record.spec)
  record.spec = nil
  return record, spec
end

local k = session_keys(1)
local now = now_ms()
local state = record_state(k, now)
if state ~= 'active' then return gone_reply(k, state) end

local session_id, op, name = ARGV[1], ARGV[2], ARGV[3]
local current = redis.call('HGET', k.upstreams, name)
if op ~= 'register' and not current then return {'unknown'} end
if op == 'remove' then
  redis.call('HDEL', k.upstreams, name)
  redis.call('HINCRBY', k.stats, 'upstream_removed', 1)
  emit(k.events, ARGV[5], 'upstream', session_id, now, {'upstream', name, 'state', 'removed'})
  return {'ok', now, current}
end

local record, old_state, spec
if op == 'register' then
  local count = redis.call('HLEN', k.upstreams)
  if not current and count >= tonumber(ARGV[6]) then return {'too_many', count} end
  if current then old_state = cjson.decode(current).state end
  record, spec = split_spec(ARGV[7])
  record.registered_at = now
  record.attempts = 0
else
  record, spec = split_spec(current)
  old_state = record.state
  if ARGV[11] ~= '' then
    local allowed = false
    for s in string.gmatch(ARGV[11], '[^,]+') do
      if s == old_state then allowed = true end
    end
    if not allowed then return {'state', tostring(old_state)} end
  end
  for field, value in pairs(cjson.decode(ARGV[7])) do
    if field ~= 'spec' then record[field] = value end
  end
end

for field in string.gmatch(ARGV[8], '[^,]+') do record[field] = now end
if ARGV[9] == 'incr' then
  record.attempts = (tonumber(record.attempts) or 0) + 1
elseif ARGV[9] == 'reset' then
  record.attempts = 0
end
if ARGV[10] == 'clear' then
  record.next_attempt_at = cjson.null
elseif ARGV[10] ~= '' then
  record.next_attempt_at = now + tonumber(ARGV[10])
end
record.updated_at = now

local rest = cjson.encode(record)  -- may fail: before any write
local encoded = string.sub(rest, 1, -2) .. ',"spec":' .. spec .. '}'
if op == 'register' then redis.call('HINCRBY', k.stats, 'upstream_registered', 1) end
if ARGV[9] == 'incr' then redis.call('HINCRBY', k.stats, 'upstream_failed_attempts', 1) end
redis.call('HSET', k.upstreams, name, encoded)
-- The record says the session has upstream records, so ending it drops them (see
-- end_session); the record was checked above, so this HSET cannot create one.
if op == 'register' then redis.call('HSET', k.record, 'extras', 1) end
local absolute = redis.call('HGET', k.record, 'life_end')
redis.call('PEXPIREAT', k.upstreams, tonumber(absolute) + tonumber(ARGV[4]))
if record.state ~= old_state then
  if op == 'update' then
    redis.call('HINCRBY', k.stats, 'upstream_to_' .. tostring(record.state), 1)
    if old_state == 'reconnecting' and record.state == 'connected' then
      redis.call('HINCRBY', k.stats, 'upstream_reconnected', 1)
    end
  end
  emit(k.events, ARGV[5], 'upstream', session_id, now,
    {'upstream', name, 'state', tostring(record.state)})
end
return {'ok', now, encoded}
