-- repair_sessions: put one shard's expiry index back in step with its session records.
-- Two kinds of call, decided atomically per id on what Redis holds now:
-- 'records' (ids of records found by SCAN):
--   a record whose entry is not where the record says (its entry deadline: `due`, or
--   the one create wrote) -> an entry added at the record's deadline, which the record
--   then says (`due`)
-- 'index' (id, bucket pairs read from the index's buckets):
--   a record, the entry later than its deadline -> moved to the deadline (an earlier
--             entry is where a slide leaves it, and the sweep moves it: see `slide`)
--   a record, an earlier entry where the record does not say -> a second entry of the id
--             dropped; the only one stays, and the record says where (`due`)
--   no record, a tombstone -> a leftover entry dropped (the id had ended)
--   neither   -> the record was lost (evicted, deleted by hand): the session is ended as
--             expired ('lost'), with tombstone, counter and event, as the sweep would do
--             once the entry came due
-- Used only by the repair job (ids come from SCAN / the buckets of the same shard).
-- KEYS: expiry, stats, events (of one shard)
-- ARGV: retention_ms, events_maxlen, the shard's key prefixes for record, tomb,
--       lock, upstreams, mcp, mcpget (KeySpace.session_prefixes), then 'records' and
--       ids, or 'index' and id, bucket pairs.
--       Like sweep.lua, it appends ids to prefixes of its own shard's hash tag.
-- Reply: {added, moved, removed, lost, then user_id, session_id, life_end, ...
--         for every active record that has a user, of a 'records' call (for the
--         user-index repair)}
local expiry, stats, events = KEYS[1], KEYS[2], KEYS[3]
local retention, maxlen, mode = tonumber(ARGV[1]), ARGV[2], ARGV[9]
local now = now_ms()
local added, moved, removed, lost = 0, 0, 0, 0
local users = {}

local function keys_of(id)
  return {
    record = ARGV[3] .. id, tomb = ARGV[4] .. id, lock = ARGV[5] .. id,
    upstreams = ARGV[6] .. id, mcp = ARGV[7] .. id, mcpget = ARGV[8] .. id,
    expiry = expiry, stats = stats, events = events,
  }
end

-- The record's deadline, the deadline its entry was written at, its user; nil without
-- a usable record.
local function read_record(k)
  local d = redis.call('HMGET', k.record, 'idle_end', 'life_end', 'user_id', 'created',
                       'idle_ms', 'due')
  if not (d[1] and d[2]) then return nil end
  local deadline = math.min(tonumber(d[1]), tonumber(d[2]))
  return deadline, entry_deadline(d[6], d[4], d[5], d[2]) or deadline, d[3], d[2]
end

if mode == 'records' then
  for i = 10, #ARGV do
    local id = ARGV[i]
    local k = keys_of(id)
    local deadline, written, user, life_end = read_record(k)
    if deadline then
      if not index_find(expiry, id, written) then
        index_add_due(expiry, k.record, id, deadline)
        added = added + 1
      end
      if user and user ~= '' and now < deadline then
        users[#users + 1] = user
        users[#users + 1] = id
        users[#users + 1] = life_end
      end
    end
  end
else
  for i = 10, #ARGV - 1, 2 do
    local id, bucket = ARGV[i], ARGV[i + 1]
    local k = keys_of(id)
    local score = index_score(expiry, bucket, id)
    if score then
      local deadline, written = read_record(k)
      if deadline then
        local start, last = index_span(bucket)
        if score > deadline or score < start or score > last then
          -- Later than the record's deadline it would expire the session late; outside
          -- its bucket's span no ending would find it.
          index_drop(expiry, bucket, id)
          index_add_due(expiry, k.record, id, math.min(score, deadline))
          moved = moved + 1
        elseif score ~= written then
          -- (A bucket holds the entries of its span, so one at `written` is on its chain.)
          if index_find(expiry, id, written) then
            index_drop(expiry, bucket, id)
            removed = removed + 1
          else
            redis.call('HSET', k.record, 'due', whole(score))
          end
        end
      elseif redis.call('EXISTS', k.tomb) == 1 then
        index_drop(expiry, bucket, id)
        removed = removed + 1
      else
        end_session(k, id, now, 'expired', 'expired', 'lost', retention, maxlen, '', nil, true)
        index_drop(expiry, bucket, id)
        redis.call('HINCRBY', stats, 'expired', 1)
        lost = lost + 1
      end
    end
  end
end
local reply = {added, moved, removed, lost}
for _, v in ipairs(users) do reply[#reply + 1] = v end
return reply
