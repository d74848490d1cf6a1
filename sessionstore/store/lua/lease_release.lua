-- lease_release: return a request or connection lease; ending a request is
-- activity, so an active session's idle deadline slides. With a commit, the
-- request's state changes are written in the same step, with compare-and-set on
-- the version the request read (the lease is returned whatever the commit says).
-- KEYS: record, tomb, requests, conns, expiry (of the session)
-- ARGV: session_id, kind ('requests' | 'conns'), lease_id, grace_ms,
--       then optionally the commit: expected_version, max_state_bytes, max_attributes,
--       n_set, n_del, n_set pairs (name, json), n_del names
-- Reply: {'ok', removed (0 | 1)[, new_version]} (new_version with a commit)
--      | {'version', actual} | {'too_large', bytes} | {'too_many', count}
--      | {'gone', ...} | {'missing'} (a commit refused; the lease is returned all the same)
local k = session_keys(1)
local now = now_ms()
local key = k[ARGV[2]]
local removed = redis.call('ZREM', key, ARGV[3])
-- The last lease of its kind returned (ZREM dropped the empty set): none of that kind
-- is live any more, so the record says so, and the next take has nothing to reclaim or
-- count (see lease.lua).
local extra = {}
if removed == 1 and redis.call('EXISTS', key) == 0 then extra = {ARGV[2] .. '_until', now} end
-- Without a commit only the deadlines are read: each field asked for costs a look
-- through the record's fields (all of them for one it lacks, as `version` at first).
if #ARGV == 4 then
  local state, f = record_state(k, now)
  if state == 'active' then slide(k, ARGV[1], now, tonumber(ARGV[4]), f, extra) end
  return {'ok', removed}
end
local n_set, n_del = tonumber(ARGV[8]), tonumber(ARGV[9])
local state, f = record_state(k, now, 'version', 'state_bytes', 'state_count',
                              unpack(state_fields(10, n_set, n_del)))
if state ~= 'active' then return gone_reply(k, state) end
local version = tonumber(f[4] or 1)  -- a record without a version is at version 1
if tonumber(ARGV[5]) ~= version then
  slide(k, ARGV[1], now, tonumber(ARGV[4]), f, extra)
  return {'version', version}
end
local staged = stage_state(k, f, 5, 10, n_set, n_del, tonumber(ARGV[6]), tonumber(ARGV[7]))
if staged[1] ~= 'ok' then
  slide(k, ARGV[1], now, tonumber(ARGV[4]), f, extra)
  return staged
end
version = version + 1
for _, v in ipairs(staged[2]) do extra[#extra + 1] = v end
extra[#extra + 1] = 'version'
extra[#extra + 1] = version
slide(k, ARGV[1], now, tonumber(ARGV[4]), f, extra)
return {'ok', removed, version}
