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

-- The shard's expiry index is compact time buckets (docs/keys.md, "The expiry index"):
-- sorted sets of session ids scored by their entry's deadline, each covering a span
-- of deadlines, at most `full` entries each so that Redis keeps them as listpacks
-- (zset-max-listpack-entries). A level-0 bucket spans `top_ms`, each level a quarter
-- of the one above (`split`), down to `levels` (1 ms); an entry goes to the shallowest
-- bucket of its deadline's chain that is not full (the deepest takes any number).
-- Quarters rather than halves: a chain of 11 buckets instead of 21 costs an index
-- write half the names to build and look up, for 0-4 B more per entry (buckets a
-- little less full: docs/performance.md). Beside them, the
-- root (the key the scripts get as `expiry`, a sorted set of the buckets by start) and
-- `<root>:counts` (a hash of their entry counts); a bucket that empties leaves both.
-- These are the index's key names built here, from the root's: `<root>:counts` and
-- `<root>:<level>:<start>` (the same shapes as KeySpace.expiry_counts / expiry_bucket).
local INDEX_SHAPE = {top_ms = 1048576, split = 4, levels = 10, full = 128}

-- The key of bucket `name` of the index `root`.
local function index_key(root, name)
  return root .. ':' .. name
end

-- The key of the counts hash of the index `root`.
local function index_counts(root)
  return root .. ':counts'
end

-- The bucket names ("<level>:<start>") of `deadline`'s chain, shallowest first, and
-- their starts.
local function index_chain(deadline)
  local names, starts, width = {}, {}, INDEX_SHAPE.top_ms
  for level = 0, INDEX_SHAPE.levels do
    local start = deadline - deadline % width
    names[level + 1] = string.format('%d:%d', level, start)
    starts[level + 1] = start
    width = width / INDEX_SHAPE.split
  end
  return names, starts
end

-- Add `session_id` at `deadline` to the index `root`: to the shallowest bucket of the
-- chain that is not full (the counts' HMGET, the ZADD, the count's HINCRBY; a new
-- bucket also enters the root). Returns the bucket's name.
local function index_add(root, session_id, deadline)
  local names, starts = index_chain(deadline)
  local counts = index_counts(root)
  local held = redis.call('HMGET', counts, unpack(names))
  local at = #names
  for i = 1, #names - 1 do
    if (tonumber(held[i]) or 0) < INDEX_SHAPE.full then
      at = i
      break
    end
  end
  if redis.call('ZADD', index_key(root, names[at]), deadline, session_id) == 1 then
    if redis.call('HINCRBY', counts, names[at], 1) == 1 then
      redis.call('ZADD', root, starts[at], names[at])
    end
  end
  return names[at]
end

-- Add `session_id`'s entry at `deadline`, one the record's fields do not derive (see
-- `entry_deadline`), so the record `record` says it in its `due` field: the sweep's
-- re-index, repair, a rotate with no entry to hand on.
local function index_add_due(root, record, session_id, deadline)
  index_add(root, session_id, deadline)
  redis.call('HSET', record, 'due', whole(deadline))
end

-- Count `n` entries out of bucket `name` of the index `root` (its members already
-- removed); a bucket left empty leaves the counts and the root (Redis drops its key).
-- Returns whether it did.
local function index_uncount(root, name, n)
  if n == 0 then return false end
  local counts = index_counts(root)
  if redis.call('HINCRBY', counts, name, -n) <= 0 then
    redis.call('HDEL', counts, name)
    redis.call('ZREM', root, name)
    return true
  end
  return false
end

-- The bucket of the index `root` that holds `session_id`'s entry written at `deadline`,
-- or nil when none does (the entry is elsewhere: the sweep or repair drops it). The
-- entry is in one of the chain's buckets that exist (a count in the hash), tried
-- deepest first (an entry is most likely in the narrowest bucket that covers its
-- deadline: each level up holds as many entries over four times the span) with
-- `probe`: 'ZREM' takes the entry out (leaving the count to the caller), 'ZSCORE'
-- only looks.
local function index_probe(root, session_id, deadline, probe)
  local names = index_chain(deadline)
  local held = redis.call('HMGET', index_counts(root), unpack(names))
  for i = #names, 1, -1 do
    if held[i] then
      local found = redis.call(probe, index_key(root, names[i]), session_id)
      if found and found ~= 0 then return names[i] end
    end
  end
  return nil
end

-- Take `session_id`'s entry out of its bucket (see `index_probe`); the bucket's name.
local function index_take(root, session_id, deadline)
  return index_probe(root, session_id, deadline, 'ZREM')
end

-- The bucket that holds `session_id`'s entry, which stays there (see `index_probe`).
local function index_find(root, session_id, deadline)
  return index_probe(root, session_id, deadline, 'ZSCORE')
end

-- Remove `session_id`'s entry from bucket `name` of the index `root`, if it is there.
local function index_drop(root, name, session_id)
  if redis.call('ZREM', index_key(root, name), session_id) == 1 then
    index_uncount(root, name, 1)
    return true
  end
  return false
end

-- The score of `session_id` in bucket `name` of the index `root` (a number), or nil.
local function index_score(root, name, session_id)
  return tonumber(redis.call('ZSCORE', index_key(root, name), session_id))
end

-- Remove `session_id`'s entry (see `index_take`) and count it out. Returns the bucket's
-- name or nil.
local function index_remove(root, session_id, deadline)
  local name = index_take(root, session_id, deadline)
  if name then index_uncount(root, name, 1) end
  return name
end

-- Give `old_id`'s entry, written at `deadline`, to `new_id`: the same bucket, the same
-- deadline, the same count. False when no bucket held it.
local function index_rename(root, old_id, new_id, deadline)
  local name = index_take(root, old_id, deadline)
  if not name then return false end
  redis.call('ZADD', index_key(root, name), deadline, new_id)
  return true
end

-- The buckets of the index `root` that start at or before `cutoff`, in the order of
-- their starts, `count` from rank `offset`: {name, start, name, start, ...}.
local function index_buckets(root, cutoff, offset, count)
  return redis.call('ZRANGE', root, '-inf', cutoff, 'BYSCORE', 'LIMIT', offset, count,
                    'WITHSCORES')
end

-- The span of bucket `name` ("<level>:<start>"): its start and its last millisecond.
local function index_span(name)
  local colon = string.find(name, ':', 1, true)
  local level, start = tonumber(string.sub(name, 1, colon - 1)), tonumber(string.sub(name, colon + 1))
  return start, start + INDEX_SHAPE.top_ms / INDEX_SHAPE.split ^ level - 1
end

-- How many entries the index `root` holds (the sum of its counts).
local function index_size(root)
  local total = 0
  for _, n in ipairs(redis.call('HVALS', index_counts(root))) do total = total + tonumber(n) end
  return total
end

-- Entries of the index `root` due at `cutoff` (score at or before it), and the oldest
-- one's deadline (or nil): every bucket that ends by `cutoff` counts whole (its
-- count), the ones that only start by then (at most one per level) by ZCOUNT; the
-- oldest entry is the least head of the buckets that start before it (each bucket's
-- entries are at or after its start).
local function index_due(root, cutoff)
  local due, oldest, offset = 0, nil, 0
  local counts = index_counts(root)
  repeat
    local page = index_buckets(root, cutoff, offset, 64)
    local whole_due = {}
    for i = 1, #page, 2 do
      local name = page[i]
      local start, last = index_span(name)
      if last <= cutoff then
        whole_due[#whole_due + 1] = name
      else
        due = due + redis.call('ZCOUNT', index_key(root, name), '-inf', cutoff)
      end
      if not oldest or start < oldest then
        local head = tonumber(redis.call('ZRANGE', index_key(root, name), 0, 0, 'WITHSCORES')[2])
        if head and head <= cutoff and (not oldest or head < oldest) then oldest = head end
      end
    end
    if #whole_due > 0 then
      for _, n in ipairs(redis.call('HMGET', counts, unpack(whole_due))) do
        due = due + (tonumber(n) or 0)
      end
    end
    offset = offset + #page / 2
  until #page < 128
  return due, oldest
end

-- The deadline a record's expiry entry was written at: its `due` field when the sweep
-- or repair moved the entry, else the deadline create / resume wrote it at (the
-- record's `created` + `idle_ms`, or `life_end` when earlier). Arguments as the record
-- holds them (strings or nil); nil when the record has none of them.
local function entry_deadline(due, created, idle_ms, life_end)
  if due then return tonumber(due) end
  if not (created and idle_ms and life_end) then return nil end
  return math.min(tonumber(created) + tonumber(idle_ms), tonumber(life_end))
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
-- The expiry entry goes in at the record's deadline, which `entry_deadline` derives
-- from the record as long as no `due` field says otherwise.
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
  index_add(k.expiry, session_id, deadline)
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
-- metadata, fence, extras, idle_ms, life_end, due} when the caller has read them
-- already (the last three find the expiry entry).
-- in_bulk: the caller drops the expiry entry and counts the ending itself, once for a
-- whole batch (the sweep, repair).
local function end_session(k, session_id, now, status, event, reason, retention_ms, maxlen,
                           superseded_by, known, in_bulk)
  local f = known or redis.call('HMGET', k.record, 'user_id', 'conversation_id', 'created',
                                'metadata', 'fence', 'extras', 'idle_ms', 'life_end', 'due')
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
    -- The entry is found from the deadline it was written at; without a record to say
    -- it (Redis dropped it), it stays for the sweep, which ends the id as `lost`.
    local deadline = entry_deadline(f[9], f[3], f[7], f[8])
    if deadline then index_remove(k.expiry, session_id, deadline) end
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
