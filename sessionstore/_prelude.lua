-- sessionstore prelude: prepended to every script by sessionstore._scripts.
--
-- Time always comes from the Redis server (TIME), never from a replica's clock.
-- Single-session scripts take the session's nine keys, in the order of
-- SessionKeys.ordered(): record, tomb, lock, upstreams, expiry, stats, events, mcp,
-- mcpget (the MCP event streams), or only those their header names (see session_keys).
-- All share one hash tag, so each script stays on one Redis Cluster slot.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A whole number as a redis.call argument. Redis 7.0 writes a Lua number argument out
-- with "%.17g" (a float's conversion, a measurable part of a hot script's time); '%d'
-- writes an integer's. (Lua's own `..` of a number is a float's "%.14g" as well.)
local function whole(n)
  return string.format('%d', n)
end

-- The session's keys by name, all nine from KEYS[first]. A script whose header names the
-- keys it uses ("-- KEYS: record, tomb, expiry (of the session)") is sent only those, in
-- that order, and gets a session_keys of its own for them from sessionstore._scripts.
local function session_keys(first)
  local k, i = {}, first or 1
  for _, name in ipairs({'record', 'tomb', 'lock', 'upstreams', 'expiry', 'stats', 'events',
                         'mcp', 'mcpget'}) do
    k[name] = KEYS[i]
    i = i + 1
  end
  return k
end

-- Append an event to a shard's stream, capped near maxlen. Returns the entry id.
local function emit(stream, maxlen, kind, session_id, now, extra)
  local args = {'XADD', stream, 'MAXLEN', '~', maxlen, '*',
                'kind', kind, 'session_id', session_id, 'at', now}
  for i = 1, #extra do args[#args + 1] = extra[i] end
  return redis.call(unpack(args))
end

-- 'active', 'overdue' (a deadline passed, not yet swept), or false (no record); and
-- the record's {idle_end, life_end, idle_ms, extra...} from the same HMGET, so a hot
-- script reads its record once (`slide` takes them as they are). A record of an earlier
-- build, written with the long field names (`idle_deadline`, ...), has no `idle_end`:
-- it reads as no record, and the sweep ends it as `lost` (docs/keys.md).
-- The first three come as numbers, each converted once (a conversion is a strtod).
local function record_state(k, now, ...)
  local f = redis.call('HMGET', k.record, 'idle_end', 'life_end', 'idle_ms', ...)
  if not f[1] then return false, f end
  f[1], f[2], f[3] = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  if now >= math.min(f[1], f[2]) then return 'overdue', f end
  return 'active', f
end

-- The reply for an id with no usable record.
local function gone_reply(k, state)
  if state == 'overdue' then return {'gone', 'expired', ''} end
  local t = redis.call('HMGET', k.tomb, 'status', 'superseded_by')
  if t[1] then return {'gone', t[1], t[2] or ''} end
  return {'missing'}
end

-- Slide the idle deadline of an active session. The expiry index is not touched: a
-- session's entry stays at the deadline it was written at (create, resume, rotate), so
-- an active session's entry comes due before its deadline and the sweep, reading the
-- record, puts it at the record's deadline then (sweep.lua): one sweep visit per idle
-- timeout of activity instead of an index write on the request path. Nor is the
-- record's TTL touched: it was set at creation from the absolute deadline, which never
-- moves (see `write_session`). f: the deadline fields from `record_state` (read here
-- when nil); extra: more field/value pairs for the same HSET (a state write's
-- attributes and version). The last activity is not stored: it is `idle_end - idle_ms`,
-- which this write moves.
local function slide(k, now, f, extra)
  f = f or redis.call('HMGET', k.record, 'idle_end', 'life_end', 'idle_ms')
  local idle = now + tonumber(f[3])
  if extra and #extra > 0 then
    redis.call('HSET', k.record, 'idle_end', whole(idle), unpack(extra))
  else
    redis.call('HSET', k.record, 'idle_end', whole(idle))
  end
  return idle
end

-- Write a new session record. spec: idle_ms, absolute_ms, grace_ms, user_id,
-- conversation_id, metadata, resumed_from; state: flat {name, json, ...}.
-- Fields with nothing to say (an empty id or metadata, fence 0, version 1, the state's
-- totals while it has no attribute) are left out: readers take a missing field as
-- empty (a missing version as 1, missing totals as 0). The id is the
-- key's; a record is active until its deadlines say otherwise, and its last activity is
-- `idle_end - idle_ms`, so none of them is stored in it.
-- The record's TTL is its absolute deadline plus the sweep grace, set here once: no
-- script moves the absolute deadline (rotate's RENAME keeps the TTL), so slides leave
-- the TTL alone. The TTL is only the fallback for a record no worker sweeps (reads and
-- the sweep go by the deadlines): such a record stays in Redis until its absolute
-- deadline plus the grace, not its idle deadline plus the grace.
local function write_session(k, session_id, now, spec, state)
  local absolute = now + spec.absolute_ms
  local idle = now + spec.idle_ms
  local deadline = math.min(idle, absolute)
  local bytes = 0
  local fields = {'HSET', k.record, 'created', whole(now),
    'idle_ms', whole(spec.idle_ms), 'idle_end', whole(idle), 'life_end', whole(absolute)}
  for _, name in ipairs({'user_id', 'conversation_id', 'resumed_from'}) do
    if spec[name] and spec[name] ~= '' then
      fields[#fields + 1] = name
      fields[#fields + 1] = spec[name]
    end
  end
  if spec.metadata and spec.metadata ~= '' and spec.metadata ~= '{}' then
    fields[#fields + 1] = 'metadata'
    fields[#fields + 1] = spec.metadata
  end
  for i = 1, #state, 2 do
    fields[#fields + 1] = 'a:' .. state[i]
    fields[#fields + 1] = state[i + 1]
    bytes = bytes + string.len(state[i + 1])
  end
  if #state > 0 then
    for _, v in ipairs({'attrs', whole(#state / 2), 'attr_bytes', whole(bytes)}) do
      fields[#fields + 1] = v
    end
  end
  redis.call(unpack(fields))
  redis.call('PEXPIREAT', k.record, whole(absolute + spec.grace_ms))
  redis.call('ZADD', k.expiry, deadline, session_id)
  redis.call('HINCRBY', k.stats, 'created', 1)
end

-- The hash fields of a state change in ARGV: n_set (name, json) pairs from ARGV[first],
-- then n_del names; set fields first, as `stage_state` takes their current values.
local function state_fields(first, n_set, n_del)
  local names = {}
  for i = 0, n_set - 1 do names[#names + 1] = 'a:' .. ARGV[first + 2 * i] end
  for i = 0, n_del - 1 do names[#names + 1] = 'a:' .. ARGV[first + 2 * n_set + i] end
  return names
end

-- Check a state change against the limits; on success apply its deletions (HDEL) and
-- return the sets for the caller's HSET, with attr_bytes and attrs where they
-- change (a missing total is 0: a state left without attributes drops both in its
-- HDEL).
-- f: an HMGET reply holding attr_bytes, attrs at f[at], f[at + 1], then the
-- current values of `state_fields`.
-- Reply: {'ok', {field, value, ...}} | {'too_large', bytes} | {'too_many', count}
local function stage_state(k, f, at, first, n_set, n_del, max_bytes, max_count)
  local old_bytes, old_count = tonumber(f[at] or 0), tonumber(f[at + 1] or 0)
  local bytes, count = old_bytes, old_count
  local sets, dels = {}, {}
  for i = 0, n_set - 1 do
    local old, value = f[at + 2 + i], ARGV[first + 1 + 2 * i]
    if old then bytes = bytes - string.len(old) else count = count + 1 end
    bytes = bytes + string.len(value)
    sets[#sets + 1] = 'a:' .. ARGV[first + 2 * i]
    sets[#sets + 1] = value
  end
  for i = 0, n_del - 1 do
    local old = f[at + 2 + n_set + i]
    if old then
      count = count - 1
      bytes = bytes - string.len(old)
      dels[#dels + 1] = 'a:' .. ARGV[first + 2 * n_set + i]
    end
  end
  if bytes > max_bytes then return {'too_large', bytes} end
  if count > max_count then return {'too_many', count} end
  -- No attribute left (only deletions take the count to 0): the totals go with them.
  if count > 0 then
    -- A total the change leaves as it was is not written again.
    if bytes ~= old_bytes then
      sets[#sets + 1] = 'attr_bytes'
      sets[#sets + 1] = whole(bytes)
    end
    if count ~= old_count then
      sets[#sets + 1] = 'attrs'
      sets[#sets + 1] = whole(count)
    end
  elseif #dels > 0 then
    dels[#dels + 1] = 'attr_bytes'
    dels[#dels + 1] = 'attrs'
  end
  if #dels > 0 then redis.call('HDEL', k.record, unpack(dels)) end
  return {'ok', sets}
end

-- End a session: tombstone kept for retention_ms; record (its leases with it), lock,
-- upstream records, MCP event streams and expiry entry dropped; counted; event emitted.
-- All in the caller's script. known: the record's {user_id, conversation_id, created,
-- metadata, fence, extras} when the caller has read them already.
-- in_bulk: the caller drops the expiry entry and counts the ending itself, once for a
-- whole batch (the sweep).
local function end_session(k, session_id, now, status, event, reason, retention_ms, maxlen,
                           superseded_by, known, in_bulk)
  local f = known or redis.call('HMGET', k.record, 'user_id', 'conversation_id', 'created',
                                'metadata', 'fence', 'extras')
  -- Keys the record says cannot be there are not looked up (in a large keyspace every
  -- lookup is a cache miss): a lock key exists only once a lock was granted (`fence`),
  -- upstream records and MCP event streams only once `extras` was set (by the upstream
  -- script's register and the MCP event store's first event). Without a record (Redis
  -- dropped it) every key is dropped. A live record has no tombstone, and the HSET
  -- below writes every tombstone field (the tombstone keeps the long names: its
  -- `created_at` is the record's `created`).
  local gone = {'DEL', k.record}
  local unknown = not f[3]
  if unknown or f[6] then
    gone[#gone + 1] = k.upstreams
    gone[#gone + 1] = k.mcp
    gone[#gone + 1] = k.mcpget
  end
  if unknown or f[5] then gone[#gone + 1] = k.lock end
  redis.call(unpack(gone))
  redis.call('HSET', k.tomb, 'status', status, 'reason', reason, 'ended_at', now,
    'user_id', f[1] or '', 'conversation_id', f[2] or '', 'created_at', f[3] or '',
    'metadata', f[4] or '{}', 'superseded_by', superseded_by)
  redis.call('PEXPIRE', k.tomb, retention_ms)
  if not in_bulk then
    redis.call('ZREM', k.expiry, session_id)
    redis.call('HINCRBY', k.stats, status, 1)
  end
  emit(k.events, maxlen, event, session_id, now, {'reason', reason, 'user_id', f[1] or ''})
end

-- Request and connection leases are fields of the session record, so they go wherever
-- the record goes (rotate, end, Redis dropping it). A kind's first lease sits in its
-- slot field, `r` / `c` = "<lease id> <deadline ms>", which its return empties ("") in
-- the slide's HSET: the request of a session that holds one lease at a time takes and
-- returns it without a call of its own. A lease taken while the slot's is live gets a
-- field of its own, `r:<lease id>` / `c:<lease id>` = its deadline, and
-- `request_leases` / `conn_leases` count those fields (live or lapsed), there only
-- while that is not 0: a take that finds no count has no field to reclaim or count.
-- A kind's ('requests' | 'conns') field prefix, count and slot (names returned, not a
-- table of them: a table built by every call is garbage for every call).
local function lease_names(kind)
  if kind == 'requests' then return 'r:', 'request_leases', 'r' end
  return 'c:', 'conn_leases', 'c'
end

-- A slot's value for a lease: "<lease id> <deadline ms>" (read back by `slot_lease`).
local function slot_value(lease_id, deadline)
  return string.format('%s %d', lease_id, deadline)
end

-- A slot's lease: its id and deadline, or nil and 0 for an empty (or missing) slot.
local function slot_lease(value)
  if not value or value == '' then return nil, 0 end
  local gap = string.find(value, ' ', 1, true)
  return string.sub(value, 1, gap - 1), tonumber(string.sub(value, gap + 1))
end

-- The `r:` / `c:` lease fields of one kind (prefix) in the record (not its slot): how
-- many are live at `now`, and the names of the lapsed ones (a crashed holder's, never
-- returned).
local function lease_fields(k, prefix, now)
  local live, lapsed, seen, cursor = 0, {}, {}, '0'
  repeat
    -- One call for a small record (a listpack is scanned whole); a large one in steps.
    local r = redis.call('HSCAN', k.record, cursor, 'MATCH', prefix .. '*', 'COUNT', 1000)
    cursor = r[1]
    local flat = r[2]
    for i = 1, #flat, 2 do
      local name = flat[i]
      if not seen[name] then  -- a scan of a large hash may return a field twice
        seen[name] = true
        if tonumber(flat[i + 1]) > now then live = live + 1 else lapsed[#lapsed + 1] = name end
      end
    end
  until cursor == '0'
  return live, lapsed
end

-- A session record as a reply: {tag, now, session_id, {field, value, ...}}. The hash
-- comes back as Redis gave it (copying it field by field into the reply would cost as
-- much again); the reader counts the live leases in it against `now`.
local function record_reply(k, now, tag, session_id)
  return {tag, now, session_id, redis.call('HGETALL', k.record)}
end

-- Why an overdue session is due: its idle deadline or its absolute lifetime.
local function overdue_reason(k)
  local d = redis.call('HMGET', k.record, 'idle_end', 'life_end')
  if tonumber(d[2]) <= tonumber(d[1]) then return 'lifetime' end
  return 'idle'
end
