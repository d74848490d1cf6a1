-- lease_release: return a request or connection lease; ending a request is
-- activity, so an active session's idle deadline slides. With a commit, the
-- request's state changes are written in the same step, with compare-and-set on
-- the version the request read (the lease is returned whatever the commit says).
-- KEYS: record, tomb (of the session)
-- ARGV: kind ('requests' | 'conns'), lease_id,
--       then optionally the commit: expected_version, max_state_bytes, max_attributes,
--       n_set, n_del, n_set pairs (name, json), n_del names
-- Reply: without a commit: removed (1, or 0: the lease was not there); with one:
--        new_version when the lease was removed and the changes written, else
--        {'ok', 0, new_version} (numbers, which Redis sends on as they are, where a
--        table is turned into an array element by element)
--      | {'version', actual} | {'too_large', bytes} | {'too_many', count}
--      | {'gone', ...} | {'missing'} (a commit refused; the lease is returned all the same)
local k = session_keys(1)
local now = now_ms()
local prefix, counted, slot = lease_names(ARGV[1])
local lease_id = ARGV[2]
local committing = #ARGV > 2
local n_set, n_del = tonumber(ARGV[6] or 0), tonumber(ARGV[7] or 0)
-- One read of the record: its deadlines, the lease count and the kind's slot; with a
-- commit also the version, the state totals and the changed attributes' values.
-- Without one only these are asked for: each field costs a look through the record's
-- fields (all of them for one it lacks, as `version` at first).
local state, f
if committing then
  state, f = record_state(k, now, counted, slot, 'version', 'attr_bytes', 'attrs',
                          unpack(state_fields(8, n_set, n_del)))
else
  state, f = record_state(k, now, counted, slot)
end
-- The lease goes whatever the session's state (a record Redis dropped took it along).
-- The slot's lease is returned by emptying the slot in the HSET below; a lease in a
-- field of its own (taken beside the slot's) by an HDEL, which drops the count too,
-- written again while other such fields are left (so the last one takes it along
-- and the next take has nothing to reclaim or count, see lease.lua).
local removed, extra = 0, {}
if slot_lease(f[5]) == lease_id then
  removed = 1
  extra = {slot, ''}
elseif f[4] then
  removed = redis.call('HDEL', k.record, prefix .. lease_id, counted) - 1
  local left = tonumber(f[4]) - removed
  if left > 0 then extra = {counted, whole(left)} end
end
if state ~= 'active' then
  -- An overdue record does not slide; its count is kept right all the same.
  if #extra > 0 then redis.call('HSET', k.record, unpack(extra)) end
  if committing then return gone_reply(k, state) end
  return removed
end
if not committing then
  slide(k, now, f, extra)
  return removed
end
local version = tonumber(f[6] or 1)  -- a record without a version is at version 1
if tonumber(ARGV[3]) ~= version then
  slide(k, now, f, extra)
  return {'version', version}
end
local staged = stage_state(k, f, 7, 8, n_set, n_del, tonumber(ARGV[4]), tonumber(ARGV[5]))
if staged[1] ~= 'ok' then
  slide(k, now, f, extra)
  return staged
end
version = version + 1
for _, v in ipairs(staged[2]) do extra[#extra + 1] = v end
extra[#extra + 1] = 'version'
extra[#extra + 1] = whole(version)
slide(k, now, f, extra)
if removed == 1 then return version end
return {'ok', 0, version}
