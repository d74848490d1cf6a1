-- lease: take or renew a request or connection lease on an active session.
-- A lease is a field of the session record: the kind's slot, or one of its own beside a
-- live slot's (see lease_names in the prelude). Lapsed leases (of crashed replicas) are
-- reclaimed by the next take, so they never count.
-- Taking a lease is activity: the idle deadline slides.
-- KEYS: record, tomb (of the session)
-- ARGV: kind ('requests' | 'conns'), lease_id, lease_ms, limit (0 = none),
--       mode ('take' | 'read' | 'renew'; 'read' is a take whose caller sends a plain
--       HGETALL of the record right after this script, in the same round trip, and
--       counts the live leases in it, see sessionstore/store/_read.py)
-- Reply: a take's: the live leases of its kind, this one counted (with the read: the
--        clock, now, which the caller reads the record against instead); numbers, which
--        Redis sends on as they are, where a table is turned into an array element by
--        element | a renewal's: {'ok', live_leases, deadline}
--      | {'limit', live_leases} | {'lost'} | {'gone', ...} | {'missing'}
local k = session_keys(1)
local now = now_ms()
local prefix, counted, slot = lease_names(ARGV[1])
local lease_id = ARGV[2]
local renewing = ARGV[5] == 'renew'
-- The lease's own field only for a renewal (a field the record lacks costs a look
-- through all of its fields, and a take's lease id is drawn fresh: never held yet).
local state, f
if renewing then
  state, f = record_state(k, now, counted, slot, prefix .. lease_id)
else
  state, f = record_state(k, now, counted, slot)
end
if state ~= 'active' then return gone_reply(k, state) end
local lease_ms, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local held = tonumber(f[4] or 0)
local holder, holder_until = slot_lease(f[5])
local deadline = now + lease_ms
if renewing then
  -- A lapsed lease is not revived: the next take reclaims it.
  if holder == lease_id then
    if holder_until <= now then return {'lost'} end
    slide(k, now, f, {slot, slot_value(lease_id, deadline)})
  else
    if not f[6] or tonumber(f[6]) <= now then return {'lost'} end
    slide(k, now, f, {prefix .. lease_id, whole(deadline)})
  end
  return {'ok', held + (holder and 1 or 0), deadline}
end
-- Leases in fields of their own only beside a live slot's (rare): reclaimed and counted.
local live, lapsed = 0, {}
if held > 0 then
  live, lapsed = lease_fields(k, prefix, now)
  -- The count goes with the last field; otherwise it is written again below.
  if #lapsed > 0 then
    if live == 0 then lapsed[#lapsed + 1] = counted end
    redis.call('HDEL', k.record, unpack(lapsed))
  end
end
local recount = #lapsed > 0 and live > 0
local in_slot = holder_until > now
local total = live + (in_slot and 1 or 0)
if limit > 0 and total >= limit then
  if recount then redis.call('HSET', k.record, counted, whole(live)) end
  return {'limit', total}
end
local extra
if in_slot then
  extra = {prefix .. lease_id, whole(deadline), counted, whole(live + 1)}
else
  -- The slot is empty, or holds a crashed holder's lapsed lease, reclaimed by this write.
  extra = {slot, slot_value(lease_id, deadline)}
  if recount then
    extra[3] = counted
    extra[4] = whole(live)
  end
end
slide(k, now, f, extra)
if ARGV[5] ~= 'read' then return total + 1 end
-- The caller reads the record itself (a plain HGETALL costs Redis far less than one
-- in a script, whose fields pass through Lua twice) and counts its leases against now.
return now
