-- sweep: expire up to `batch` due sessions of one shard, atomically.
-- Cost is O(due): of the shard's expiry index (time buckets, see the prelude's
-- index_add) only the buckets that start by the cutoff are read, in the order of
-- their starts, and of each only its due head. Two workers sweeping the same shard
-- never expire a session twice: each entry is removed (or moved to its real deadline)
-- by the script that handles it.
-- KEYS: expiry, stats, events (of one shard)
-- ARGV: batch, retention_ms, events_maxlen, then the shard's key prefixes for
--       record, tomb, lock, upstreams, mcp, mcpget (KeySpace.session_prefixes),
--       then min_overdue_ms (optional, default 0: take entries due by at least this long;
--       the aggressive start-up pass uses it for long-overdue sessions only).
--       This is the one script that appends ids to key prefixes: the ids come from
--       the same shard's index, so every key shares the shard's hash tag.
-- Reply: {expired, lost, rescheduled, still_due, now, oldest_due_deadline_or_'', removed,
--         then user_id, session_id of every expired session that had a user}
--        still_due counts entries due by at least min_overdue_ms after this batch, and
--        the oldest of them is the deadline given;
--        removed counts entries of ids that had already ended (tombstone present).
local expiry, stats, events = KEYS[1], KEYS[2], KEYS[3]
local batch, retention, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
local cutoff = now - (tonumber(ARGV[10]) or 0)
local expired, lost, rescheduled, removed = 0, 0, 0, 0
local users, later = {}, {}
local handled, offset = 0, 0

-- One due entry of the batch: expired, put back for later (`later`), or dropped.
local function handle(id)
  local k = {
    record = ARGV[4] .. id, tomb = ARGV[5] .. id, lock = ARGV[6] .. id,
    upstreams = ARGV[7] .. id, mcp = ARGV[8] .. id, mcpget = ARGV[9] .. id,
    expiry = expiry, stats = stats, events = events,
  }
  -- One read of the record: its deadlines, what the tombstone keeps, which keys it has.
  local state, f = record_state(k, now, 'user_id', 'conversation_id', 'created', 'metadata',
                                'fence', 'extras')
  if state == 'overdue' then
    local reason = f[2] <= f[1] and 'lifetime' or 'idle'
    end_session(k, id, now, 'expired', 'expired', reason, retention, maxlen, '',
                {f[4], f[5], f[6], f[7], f[8], f[9]}, true)
    expired = expired + 1
    if f[4] and f[4] ~= '' then  -- for the caller to drop from the user index
      users[#users + 1] = f[4]
      users[#users + 1] = id
    end
  elseif state == 'active' then
    -- The entry was written at an earlier deadline and the session slid since (slides
    -- leave the index alone): it goes back in at the record's deadline, once this
    -- bucket's due entries are out (below).
    later[#later + 1] = id
    later[#later + 1] = math.min(f[1], f[2])
    rescheduled = rescheduled + 1
  elseif redis.call('EXISTS', k.tomb) == 1 then
    removed = removed + 1
  else
    -- Redis dropped the record after the sweep grace; still tombstone and announce it.
    end_session(k, id, now, 'expired', 'expired', 'lost', retention, maxlen, '', nil, true)
    expired = expired + 1
    lost = lost + 1
  end
end

while handled < batch do
  local page = index_buckets(expiry, cutoff, offset, 32)
  local emptied = 0
  for p = 1, #page, 2 do
    local name = page[p]
    local bucket = index_key(expiry, name)
    local due = redis.call('ZRANGE', bucket, '-inf', cutoff, 'BYSCORE', 'LIMIT', 0,
                           batch - handled)
    for _, id in ipairs(due) do handle(id) end
    -- Every entry handled leaves its bucket, counted out once for the bucket.
    for i = 1, #due, 500 do
      redis.call('ZREM', bucket, unpack(due, i, math.min(i + 499, #due)))
    end
    if index_uncount(expiry, name, #due) then emptied = emptied + 1 end
    handled = handled + #due
    if handled >= batch then break end
  end
  if #page < 64 then break end  -- no bucket after these starts by the cutoff
  offset = offset + #page / 2 - emptied
end
-- The moved entries go in after the walk (their deadlines are ahead: none is due), and
-- their records say where (`due`), so that ending them finds them.
for i = 1, #later, 2 do
  index_add_due(expiry, ARGV[4] .. later[i], later[i], later[i + 1])
end
if expired > 0 then redis.call('HINCRBY', stats, 'expired', expired) end
local still_due, oldest = index_due(expiry, cutoff)
local reply = {expired, lost, rescheduled, still_due, now, oldest and whole(oldest) or '', removed}
for _, v in ipairs(users) do reply[#reply + 1] = v end
return reply
