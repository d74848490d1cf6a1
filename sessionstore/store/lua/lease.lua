-- lease: take or renew a request or connection lease on an active session.
-- A lease is a field of the session record (see LEASES in the prelude). Lapsed
-- leases (of crashed replicas) are reclaimed by the next take, so they never count.
-- Taking a lease is activity: the idle deadline slides.
-- KEYS: record, tomb (of the session)
-- ARGV: session_id, kind ('requests' | 'conns'), lease_id, lease_ms, limit (0 = none),
--       mode ('take' | 'renew'), read ('1': also return what a reader of the
--       record needs beside it: the caller sends a plain HGETALL of the record right
--       after this script, in the same round trip, see sessionstore/store/_read.py)
-- Reply: {'ok', live_leases, deadline[, now]}
--      | {'limit', live_leases} | {'lost'} | {'gone', ...} | {'missing'}
local k = session_keys(1)
local now = now_ms()
local prefix, counted = LEASES[ARGV[2]][1], LEASES[ARGV[2]][2]
local field = prefix .. ARGV[3]
local renewing = ARGV[6] == 'renew'
-- The lease's own field only for a renewal (a field the record lacks costs a look
-- through all of its fields, and a take's lease id is drawn fresh: never held yet).
local state, f
if renewing then
  state, f = record_state(k, now, counted, field)
else
  state, f = record_state(k, now, counted)
end
if state ~= 'active' then return gone_reply(k, state) end
local lease_ms, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local held = tonumber(f[4] or 0)
local deadline = now + lease_ms
if renewing then
  -- A lapsed lease is not revived: the next take reclaims it.
  if not f[5] or tonumber(f[5]) <= now then return {'lost'} end
  slide(k, now, f, {field, deadline})
  return {'ok', held, deadline}
end
-- No lease of this kind in the record: nothing to reclaim or count (the common case).
local live = 0
if held > 0 then
  local lapsed
  live, lapsed = lease_fields(k, prefix, now)
  if #lapsed > 0 then redis.call('HDEL', k.record, unpack(lapsed)) end
  if limit > 0 and live >= limit then
    if #lapsed > 0 then redis.call('HSET', k.record, counted, live) end
    return {'limit', live}
  end
end
live = live + 1
slide(k, now, f, {field, deadline, counted, live})
if ARGV[7] ~= '1' then return {'ok', live, deadline} end
-- The caller reads the record itself (a plain HGETALL costs Redis far less than one
-- in a script, whose fields pass through Lua twice) and counts its leases against now.
return {'ok', live, deadline, now}
