-- lease: take or renew a request or connection lease on an active session.
-- Expired leases (of crashed replicas) are reclaimed first, so they never count.
-- Taking a lease is activity: the idle deadline slides.
-- KEYS: record, tomb, requests, conns, expiry (of the session)
-- ARGV: session_id, kind ('requests' | 'conns'), lease_id, lease_ms, limit (0 = none),
--       grace_ms, mode ('take' | 'renew'), read ('1': also return what a reader of the
--       record needs beside it: the caller sends a plain HGETALL of the record right
--       after this script, in the same round trip, see sessionstore/store/_read.py)
-- Reply: {'ok', live_leases, deadline[, now, live_requests, live_connections]}
--      | {'limit', live_leases} | {'lost'} | {'gone', ...} | {'missing'}
local k = session_keys(1)
local now = now_ms()
local kind = ARGV[2]
local other = kind == 'requests' and 'conns' or 'requests'
local reading = ARGV[8] == '1'
-- The other kind's deadline only for the read (a field the record lacks costs a look
-- through all of its fields).
local state, f
if reading then
  state, f = record_state(k, now, kind .. '_until', other .. '_until')
else
  state, f = record_state(k, now, kind .. '_until')
end
if state ~= 'active' then return gone_reply(k, state) end
local key = k[kind]
local lease_ms, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
-- The record keeps the latest deadline any lease of this kind was given, and the set
-- lives no longer than its longest lease: past that deadline no lease of this kind is
-- live, and there is nothing to reclaim or count. A record without the field (no take
-- yet, or one by a release that did not write it) is counted.
local live = 0
if not f[4] or tonumber(f[4]) > now then
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  live = redis.call('ZCARD', key)
end
if ARGV[7] == 'renew' then
  if live == 0 or not redis.call('ZSCORE', key, ARGV[3]) then return {'lost'} end
else
  -- A lease id is drawn fresh for every take, so it is never held yet.
  if limit > 0 and live >= limit then return {'limit', live} end
  live = live + 1
end
local deadline = now + lease_ms
redis.call('ZADD', key, deadline, ARGV[3])
-- The set lives as long as its longest lease. Alone in it, the set is new (no TTL yet);
-- otherwise GT never shortens the TTL another holder's longer lease set.
if live == 1 then
  redis.call('PEXPIRE', key, lease_ms)
else
  redis.call('PEXPIRE', key, lease_ms, 'GT')
end
-- The record keeps the latest deadline of this kind, so reads can tell that no lease
-- of it is live without counting (see live_leases).
local extra = {}
local later = not f[4] or tonumber(f[4]) < deadline
if later then extra = {kind .. '_until', deadline} end
slide(k, ARGV[1], now, tonumber(ARGV[6]), f, extra)
if not reading then return {'ok', live, deadline} end
-- The caller reads the record itself (a plain HGETALL costs Redis far less than one
-- in a script, whose fields pass through Lua twice); it needs the clock and counts.
local others = live_leases(k[other], f[5], now)
local requests = kind == 'requests' and live or others
local conns = kind == 'conns' and live or others
return {'ok', live, deadline, now, requests, conns}
