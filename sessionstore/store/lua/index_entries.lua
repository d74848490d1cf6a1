-- index_entries: the earliest entries of one shard's expiry index (time buckets, see
-- the prelude's index_add) on both sides of now, for listing sessions by status.
-- The buckets are walked in the order of their starts; a bucket's entries are at or
-- after its start, so the walk for the entries ahead stops at a bucket that starts
-- after the `limit`-th earliest found, and the one for due entries reads only the
-- buckets that start by now.
-- KEYS: expiry (of one shard)
-- ARGV: limit
-- Reply: {now, {id, deadline, ...} of up to `limit` entries ahead of now, earliest first,
--         {id, deadline, ...} of up to `limit` due entries, earliest first}
local root, limit = KEYS[1], tonumber(ARGV[1])
local now = now_ms()

-- The earliest `limit` entries of the buckets in `page` with scores in [low, high].
local function earliest(found, page, low, high)
  for i = 1, #page, 2 do
    local start = tonumber(page[i + 1])
    if #found >= limit and start > found[limit][2] then return true end
    local got = redis.call('ZRANGE', index_key(root, page[i]), low, high, 'BYSCORE',
                           'LIMIT', 0, limit, 'WITHSCORES')
    for j = 1, #got, 2 do found[#found + 1] = {got[j], tonumber(got[j + 1])} end
    table.sort(found, function(a, b) return a[2] < b[2] end)
    for j = #found, limit + 1, -1 do found[j] = nil end
  end
  return false
end

local function walk(high_start, low, high)
  local found, offset = {}, 0
  repeat
    local page = index_buckets(root, high_start, offset, 64)
    if earliest(found, page, low, high) then break end
    offset = offset + #page / 2
  until #page < 128
  local flat = {}
  for _, e in ipairs(found) do
    flat[#flat + 1] = e[1]
    flat[#flat + 1] = whole(e[2])
  end
  return flat
end

if limit < 1 then return {now, {}, {}} end
return {now, walk('+inf', '(' .. now, '+inf'), walk(now, '-inf', now)}
