-- repair_sessions: put one shard's expiry index back in step with its session records.
-- For each given id, decided atomically on what Redis holds now:
--   a record               -> its index entry at the record's deadline (added, or moved
--                             when it is later than the deadline; an earlier entry is
--                             where a slide leaves it, and the sweep moves it: see
--                             `slide`)
--   no record, a tombstone -> a leftover index entry dropped (the id had ended)
--   neither, but an entry  -> the record was lost (evicted, deleted by hand): the session
--                             is ended as expired ('lost'), with tombstone, counter and
--                             event, as the sweep would do once the entry came due
-- Used only by the repair job (ids come from SCAN / ZSCAN of the same shard).
-- KEYS: expiry, stats, events (of one shard)
-- ARGV: retention_ms, events_maxlen, the shard's key prefixes for record, tomb,
--       lock, upstreams, mcp, mcpget (KeySpace.session_prefixes), then ids.
--       Like sweep.lua, it appends ids to prefixes of its own shard's hash tag.
-- Reply: {added, moved, removed, lost, then user_id, session_id, life_end, ...
--         for every active record that has a user (for the user-index repair)}
local expiry, stats, events = KEYS[1], KEYS[2], KEYS[3]
local retention, maxlen = tonumber(ARGV[1]), ARGV[2]
local now = now_ms()
local added, moved, removed, lost = 0, 0, 0, 0
local users = {}
for i = 9, #ARGV do
  local id = ARGV[i]
  local k = {
    record = ARGV[3] .. id, tomb = ARGV[4] .. id, lock = ARGV[5] .. id,
    upstreams = ARGV[6] .. id, mcp = ARGV[7] .. id, mcpget = ARGV[8] .. id,
    expiry = expiry, stats = stats, events = events,
  }
  local score = redis.call('ZSCORE', expiry, id)
  local d = redis.call('HMGET', k.record, 'idle_end', 'life_end', 'user_id')
  if d[1] and d[2] then
    local deadline = math.min(tonumber(d[1]), tonumber(d[2]))
    if not score then
      redis.call('ZADD', expiry, deadline, id)
      added = added + 1
    elseif tonumber(score) > deadline then
      -- A later entry would expire the session late; an earlier one is lazy, not wrong.
      redis.call('ZADD', expiry, deadline, id)
      moved = moved + 1
    end
    if d[3] and d[3] ~= '' and now < deadline then
      users[#users + 1] = d[3]
      users[#users + 1] = id
      users[#users + 1] = d[2]
    end
  elseif score then
    if redis.call('EXISTS', k.tomb) == 1 then
      redis.call('ZREM', expiry, id)
      removed = removed + 1
    else
      end_session(k, id, now, 'expired', 'expired', 'lost', retention, maxlen, '')
      lost = lost + 1
    end
  end
end
local reply = {added, moved, removed, lost}
for _, v in ipairs(users) do reply[#reply + 1] = v end
return reply
