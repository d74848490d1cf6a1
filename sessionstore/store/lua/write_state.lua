-- write_state: set and delete state attributes (and optionally replace metadata)
-- atomically, with optional compare-and-set on version and a lock fence check.
-- KEYS: record, tomb (of the session)
-- ARGV: max_state_bytes, max_attributes, n_set, n_del, then n_set pairs (name, json),
--       then n_del names, then the options, each left out with those after it when
--       not given (every argument costs Redis about as much to take as a short
--       command's own work): expected_version ('' = any), fence ('' = none),
--       metadata_json ('' = unchanged)
-- Reply: new_version (a number: the reply of a written change, nearly every call, is
--        no table for Redis to turn into an array)
--      | {'version', actual} | {'fence', newest}
--      | {'too_large', bytes} | {'too_many', count} | {'gone', ...} | {'missing'}
local k = session_keys(1)
local now = now_ms()
local n_set, n_del = tonumber(ARGV[3]), tonumber(ARGV[4])
local options = 5 + 2 * n_set + n_del
local expected, fence, metadata = ARGV[options] or '', ARGV[options + 1] or '',
                                  ARGV[options + 2] or ''
-- One read of the record: deadlines, version, fence, the state's size and the values
-- being replaced.
local state, f = record_state(k, now, 'version', 'fence', 'attr_bytes', 'attrs',
                              unpack(state_fields(5, n_set, n_del)))
if state ~= 'active' then return gone_reply(k, state) end
-- A record without a version is at version 1.
local version, newest_fence = tonumber(f[4] or 1), tonumber(f[5] or 0)
if expected ~= '' and tonumber(expected) ~= version then return {'version', version} end
if fence ~= '' and tonumber(fence) < newest_fence then return {'fence', newest_fence} end
local staged = stage_state(k, f, 6, 5, n_set, n_del, tonumber(ARGV[1]), tonumber(ARGV[2]))
if staged[1] ~= 'ok' then return staged end
version = version + 1
local extra = staged[2]
extra[#extra + 1] = 'version'
extra[#extra + 1] = whole(version)
if metadata == '{}' then
  redis.call('HDEL', k.record, 'metadata')  -- empty metadata is left out of the hash
elseif metadata ~= '' then
  extra[#extra + 1] = 'metadata'
  extra[#extra + 1] = metadata
end
slide(k, now, f, extra)
return version
