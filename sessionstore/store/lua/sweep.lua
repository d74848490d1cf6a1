-- sweep: expire up to `batch` due sessions of one shard, atomically.
-- Cost is O(due): only the due head of the expiry index is read. Two workers
-- sweeping the same shard never expire a session twice: each entry is removed
-- (or moved to its real deadline) by the script that handles it.
-- KEYS: expiry, stats, events (of one shard)
-- ARGV: batch, retention_ms, events_maxlen, then the shard's key prefixes for
--       record, tomb, lock, upstreams, mcp, mcpget (KeySpace.session_prefixes),
--       then min_overdue_ms (optional, default 0: take entries due by at least this long;
--       the aggressive start-up pass uses it for long-overdue sessions only).
--       This is the one script that appends ids to key prefixes: the ids come from
--       the same shard's index, so every key shares the shard's hash tag.
-- Reply: {expired, lost, rescheduled, still_due, now, oldest_deadline_or_'', removed,
--         then user_id, session_id of every expired session that had a user}
--        still_due counts entries due by at least min_overdue_ms after this batch;
--        removed counts entries of ids that had already ended (tombstone present).
local expiry, stats, events = KEYS[1], KEYS[2], KEYS[3]
local batch, retention, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
local cutoff = now - (tonumber(ARGV[10]) or 0)
local expired, lost, rescheduled, removed = 0, 0, 0, 0
local ended, users = {}, {}
local due = redis.call('ZRANGEBYSCORE', expiry, '-inf', cutoff, 'LIMIT', 0, batch)
for _, id in ipairs(due) do
  local k = {
    record = ARGV[4] .. id, tomb = ARGV[5] .. id, lock = ARGV[6] .. id,
    upstreams = ARGV[7] .. id, mcp = ARGV[8] .. id, mcpget = ARGV[9] .. id,
    expiry = expiry, stats = stats, events = events,
  }
  -- One read of the record: its deadlines, what the tombstone keeps, which keys it has.
  local state, f = record_state(k, now, 'user_id', 'conversation_id', 'created', 'metadata',
                                'fence', 'extras')
  if state == 'overdue' then
    local reason = tonumber(f[2]) <= tonumber(f[1]) and 'lifetime' or 'idle'
    end_session(k, id, now, 'expired', 'expired', reason, retention, maxlen, '',
                {f[4], f[5], f[6], f[7], f[8], f[9]}, true)
    ended[#ended + 1] = id
    expired = expired + 1
    if f[4] and f[4] ~= '' then  -- for the caller to drop from the user index
      users[#users + 1] = f[4]
      users[#users + 1] = id
    end
  elseif state == 'active' then
    -- The entry was written at an earlier deadline and the session slid since (slides
    -- leave the index alone): put it at the record's deadline.
    redis.call('ZADD', expiry, math.min(tonumber(f[1]), tonumber(f[2])), id)
    rescheduled = rescheduled + 1
  elseif redis.call('EXISTS', k.tomb) == 1 then
    redis.call('ZREM', expiry, id)
    removed = removed + 1
  else
    -- Redis dropped the record after the sweep grace; still tombstone and announce it.
    end_session(k, id, now, 'expired', 'expired', 'lost', retention, maxlen, '', nil, true)
    ended[#ended + 1] = id
    expired = expired + 1
    lost = lost + 1
  end
end
-- The ended sessions leave the index and are counted once for the batch.
for i = 1, #ended, 500 do
  redis.call('ZREM', expiry, unpack(ended, i, math.min(i + 499, #ended)))
end
if expired > 0 then redis.call('HINCRBY', stats, 'expired', expired) end
local still_due = redis.call('ZCOUNT', expiry, '-inf', cutoff)
local oldest = redis.call('ZRANGE', expiry, 0, 0, 'WITHSCORES')
local reply = {expired, lost, rescheduled, still_due, now, oldest[2] or '', removed}
for _, v in ipairs(users) do reply[#reply + 1] = v end
return reply
