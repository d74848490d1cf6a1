-- breaker_record: add a batch of outcomes of a closed breaker to the fleet-wide
-- window and trip it (closed -> open) when the window says so. Outcomes observed
-- in another generation, or while the breaker is not closed, are ignored.
-- KEYS: the breaker's five keys (BreakerKeys.ordered())
-- ARGV: common (name, channel, events_maxlen, retention_ms, open_ms),
--       gen, calls, failures, slow, minimum_calls, failure_rate_threshold,
--       slow_rate_threshold (0 = off), bucket_ms, buckets
-- Reply: {'counted' | 'ignored', snapshot JSON}
local now = now_ms()
local st = load_state()
local gen, calls, failures, slow = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
  tonumber(ARGV[9])
if st.state ~= 'closed' or st.gen ~= gen then
  return {'ignored', cjson.encode(snapshot(st, now))}
end
local minimum, failure_rate, slow_rate = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local bucket_ms, buckets = tonumber(ARGV[13]), tonumber(ARGV[14])
local bucket = math.floor(now / bucket_ms)
if calls > 0 then redis.call('HINCRBY', BK.window, 'c:' .. bucket, calls) end
if failures > 0 then redis.call('HINCRBY', BK.window, 'f:' .. bucket, failures) end
if slow > 0 then redis.call('HINCRBY', BK.window, 's:' .. bucket, slow) end
redis.call('PEXPIRE', BK.window, bucket_ms * (buckets + 1))
local c, f, s = window_totals(now, bucket_ms, buckets, true)
-- The rule; sessionstore.breaker._policy.trip_cause is its Python twin.
if c >= minimum then
  if f >= failure_rate * c then
    transition(st, 'open', 'failure_rate', now)
  elseif slow_rate > 0 and s >= slow_rate * c then
    transition(st, 'open', 'slow_call_rate', now)
  end
end
return {'counted', cjson.encode(snapshot(st, now))}
