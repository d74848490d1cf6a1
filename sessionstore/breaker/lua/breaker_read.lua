-- breaker_read: a breaker's state, window totals and live probe leases (a poll or
-- `show`). Refreshes the retention of the breaker's keys when half of it is used.
-- KEYS: the breaker's five keys (BreakerKeys.ordered())
-- ARGV: common (name, channel, events_maxlen, retention_ms, open_ms), bucket_ms, buckets
-- Reply: snapshot JSON plus calls, failures, slow, probes_in_flight
local now = now_ms()
local st = load_state()
local calls, failures, slow = window_totals(now, tonumber(ARGV[6]), tonumber(ARGV[7]), false)
if redis.call('PTTL', BK.state) < B.retention / 2 then keep() end
local snap = snapshot(st, now)
snap.calls, snap.failures, snap.slow = calls, failures, slow
snap.probes_in_flight = redis.call('ZCOUNT', BK.probes, '(' .. now, '+inf')
return cjson.encode(snap)
