-- sweep: expire up to `batch` due sessions of one shard, atomically.
-- Cost is O(due): only the due head of the expiry index is read. Two workers
-- sweeping the same shard never expire a session twice: each entry is removed
-- (or moved to its real deadline) by the script that handles it.
-- KEYS: expiry, stats, events (of one shard)
-- ARGV: batch, retention_ms, events_maxlen, then the shard's key prefixes for
--       record, tomb, requests, conns, lock, upstreams, mcp, mcpget (KeySpace.session_prefixes),
--       then min_overdue_ms (optional, default 0: take entries due by at least this long;
--       the aggressive start-up pass uses it for long-overdue sessions only).
--       This is the one script that appends ids to key prefixes: the ids come from
--       the same shard's index, so every key shares the shard's hash tag.
-- Reply: {expired, lost, rescheduled, still_due, now, oldest_deadline_or_'', removed}
--        still_due counts entries due by at least min_overdue_ms after this batch;
--        removed counts entries of ids that had already ended (tombstone present).
local expiry, stats, events = KEYS[1], KEYS[2], KEYS[3]
local batch, retention, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
local cutoff = now - (tonumber(ARGV[12]) or 0)
local expired, lost, rescheduled, removed = 0, 0, 0, 0
local due = redis.call('ZRANGEBYSCORE', expiry, '-inf', cutoff, 'LIMIT', 0, batch)
for _, id in ipairs(due) do
  local k = {
    record = ARGV[4] .. id, tomb = ARGV[5] .. id, requests = ARGV[6] .. id,
    conns = ARGV[7] .. id, lock = ARGV[8] .. id, upstreams = ARGV[9] .. id, mcp = ARGV[10] .. id,
    mcpget = ARGV[11] .. id,
    expiry = expiry, stats = stats, events = events,
  }
  local state = record_state(k, now)
  if state == 'overdue' then
    end_session(k, id, now, 'expired', 'expired', overdue_reason(k), retention, maxlen, '')
    expired = expired + 1
  elseif state == 'active' then
    -- The entry lagged behind the record; put it back at the record's deadline.
    local d = redis.call('HMGET', k.record, 'idle_deadline', 'absolute_deadline')
    redis.call('ZADD', expiry, math.min(tonumber(d[1]), tonumber(d[2])), id)
    rescheduled = rescheduled + 1
  elseif redis.call('EXISTS', k.tomb) == 1 then
    redis.call('ZREM', expiry, id)
    removed = removed + 1
  else
    -- Redis dropped the record after the sweep grace; still tombstone and announce it.
    end_session(k, id, now, 'expired', 'expired', 'lost', retention, maxlen, '')
    expired = expired + 1
    lost = lost + 1
  end
end
local still_due = redis.call('ZCOUNT', expiry, '-inf', cutoff)
local oldest = redis.call('ZRANGE', expiry, 0, 0, 'WITHSCORES')
return {expired, lost, rescheduled, still_due, now, oldest[2] or '', removed}
