-- sessionstore breaker prelude: prepended (after _prelude.lua) to every breaker_*.lua
-- by sessionstore.breaker._scripts.
--
-- KEYS (BreakerKeys.ordered(), all with the tag {<name>}):
--   1 state (hash), 2 window (hash), 3 probes (zset), 4 events (stream), 5 audit (stream)
-- ARGV[1..5], common to every breaker script:
--   1 name, 2 pub/sub channel, 3 events_maxlen, 4 retention_ms, 5 open_ms
-- A missing state hash is a closed breaker of generation 0.

local BK = {state = KEYS[1], window = KEYS[2], probes = KEYS[3], events = KEYS[4], audit = KEYS[5]}
local B = {
  name = ARGV[1], channel = ARGV[2], maxlen = tonumber(ARGV[3]),
  retention = tonumber(ARGV[4]), open_ms = tonumber(ARGV[5]),
}

local function load_state()
  local f = redis.call('HMGET', BK.state, 'state', 'gen', 'changed_at', 'open_until',
    'successes', 'cause', 'actor', 'reason', 'trips')
  return {
    state = f[1] or 'closed', gen = tonumber(f[2] or 0), changed_at = tonumber(f[3] or 0),
    open_until = tonumber(f[4] or 0), successes = tonumber(f[5] or 0), cause = f[6] or '',
    actor = f[7] or '', reason = f[8] or '', trips = tonumber(f[9] or 0),
  }
end

-- The state as sent to replicas (replies and pushes share this shape).
local function snapshot(st, now)
  return {
    name = B.name, state = st.state, gen = st.gen, now_ms = now, changed_at_ms = st.changed_at,
    open_until_ms = st.open_until, successes = st.successes, cause = st.cause,
    actor = st.actor, reason = st.reason, trips = st.trips,
  }
end

-- The long-lived keys stay for `retention` after their last use.
local function keep()
  redis.call('PEXPIRE', BK.state, B.retention)
  redis.call('PEXPIRE', BK.events, B.retention)
  redis.call('PEXPIRE', BK.audit, B.retention)
end

local function breaker_event(now, kind, extra)
  local args = {'XADD', BK.events, 'MAXLEN', '~', B.maxlen, '*',
                'kind', kind, 'name', B.name, 'at', now}
  for i = 1, #extra do args[#args + 1] = extra[i] end
  return redis.call(unpack(args))
end

-- Window totals over the buckets still inside the window; `prune` drops the others.
local function window_totals(now, bucket_ms, buckets, prune)
  local current = math.floor(now / bucket_ms)
  local all = redis.call('HGETALL', BK.window)
  local totals = {c = 0, f = 0, s = 0}
  local stale = {}
  for i = 1, #all, 2 do
    local field = all[i]
    local bucket = tonumber(string.sub(field, 3))
    if bucket and bucket > current - buckets then
      local kind = string.sub(field, 1, 1)
      totals[kind] = (totals[kind] or 0) + tonumber(all[i + 1])
    else
      stale[#stale + 1] = field
    end
  end
  if prune and #stale > 0 then redis.call('HDEL', BK.window, unpack(stale)) end
  return totals.c, totals.f, totals.s
end

-- Move to `to`, starting a new period (empty window, no probe leases); record
-- the event and announce the new state on the channel. Changes `st` in place.
local function transition(st, to, cause, now, actor, reason)
  local from = st.state
  st.state, st.gen, st.changed_at, st.cause = to, st.gen + 1, now, cause
  st.actor, st.reason, st.successes = actor or '', reason or '', 0
  st.open_until = 0
  if to == 'open' then
    st.open_until = now + B.open_ms
    st.trips = st.trips + 1
  end
  redis.call('HSET', BK.state, 'state', to, 'gen', st.gen, 'changed_at', now,
    'open_until', st.open_until, 'successes', 0, 'cause', cause, 'actor', st.actor,
    'reason', st.reason, 'trips', st.trips)
  redis.call('DEL', BK.window, BK.probes)
  breaker_event(now, 'transition', {'from', from, 'to', to, 'cause', cause, 'gen', st.gen,
    'actor', st.actor, 'reason', st.reason})
  keep()
  local snap = snapshot(st, now)
  snap.from = from
  redis.call('PUBLISH', B.channel, cjson.encode(snap))
end
