-- write_state: set and delete state attributes (and optionally replace metadata)
-- atomically, with optional compare-and-set on version and a lock fence check.
-- KEYS: the session's nine keys
-- ARGV: session_id, grace_ms, expected_version ('' = any), fence ('' = none),
--       max_state_bytes, max_attributes, metadata_json ('' = unchanged),
--       n_set, n_del, then n_set pairs (name, json), then n_del names
-- Reply: {'ok', new_version, now} | {'version', actual} | {'fence', newest}
--      | {'too_large', bytes} | {'too_many', count} | {'gone', ...} | {'missing'}
local k = session_keys(1)
local now = now_ms()
local state = record_state(k, now)
if state ~= 'active' then return gone_reply(k, state) end

local cur = redis.call('HMGET', k.record, 'version', 'fence', 'state_bytes', 'state_count')
local version = tonumber(cur[1])
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= version then return {'version', version} end
if ARGV[4] ~= '' and tonumber(ARGV[4]) < tonumber(cur[2]) then return {'fence', tonumber(cur[2])} end

local n_set, n_del = tonumber(ARGV[8]), tonumber(ARGV[9])
local bytes, count = tonumber(cur[3]), tonumber(cur[4])
local sets, dels = {}, {}
for i = 0, n_set - 1 do
  local field, value = 'a:' .. ARGV[10 + 2 * i], ARGV[11 + 2 * i]
  local old = redis.call('HSTRLEN', k.record, field)
  if old == 0 then count = count + 1 end
  bytes = bytes - old + string.len(value)
  sets[#sets + 1] = field
  sets[#sets + 1] = value
end
for i = 0, n_del - 1 do
  local field = 'a:' .. ARGV[10 + 2 * n_set + i]
  local old = redis.call('HSTRLEN', k.record, field)
  if old > 0 then
    count = count - 1
    bytes = bytes - old
    dels[#dels + 1] = field
  end
end
if bytes > tonumber(ARGV[5]) then return {'too_large', bytes} end
if count > tonumber(ARGV[6]) then return {'too_many', count} end

if #sets > 0 then redis.call('HSET', k.record, unpack(sets)) end
if #dels > 0 then redis.call('HDEL', k.record, unpack(dels)) end
if ARGV[7] ~= '' then redis.call('HSET', k.record, 'metadata', ARGV[7]) end
version = version + 1
redis.call('HSET', k.record, 'version', version, 'state_bytes', bytes, 'state_count', count)
slide(k, ARGV[1], now, tonumber(ARGV[2]))
return {'ok', version, now}
