-- breaker_acquire: permission for a call when the caller's view is not plainly
-- closed. Moves open -> half_open once the open duration has passed, reclaims
-- lapsed probe leases (their process died), and grants a probe lease while
-- fewer than `probes` probes are in flight or have succeeded in this period.
-- KEYS: the breaker's five keys (BreakerKeys.ordered())
-- ARGV: common (name, channel, events_maxlen, retention_ms, open_ms),
--       lease_id, lease_ms, probes
-- Reply: {'allowed', snapshot JSON}          closed or forced_closed: no lease needed
--      | {'probe', snapshot JSON}            a probe lease was granted
--      | {'refused', snapshot JSON, retry_after_ms}   (-1: forced open, no deadline)
local now = now_ms()
local st = load_state()
if st.state == 'closed' or st.state == 'forced_closed' then
  return {'allowed', cjson.encode(snapshot(st, now))}
end
if st.state == 'forced_open' then
  return {'refused', cjson.encode(snapshot(st, now)), -1}
end
if st.state == 'open' then
  if now < st.open_until then
    return {'refused', cjson.encode(snapshot(st, now)), st.open_until - now}
  end
  transition(st, 'half_open', 'open_elapsed', now)
end
local lease_id, lease_ms, probes = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local reclaimed = redis.call('ZREMRANGEBYSCORE', BK.probes, '-inf', now)
if reclaimed > 0 then
  breaker_event(now, 'probe_reclaimed', {'count', reclaimed, 'gen', st.gen})
end
local in_flight = redis.call('ZCARD', BK.probes)
if in_flight + st.successes >= probes then
  local earliest = redis.call('ZRANGE', BK.probes, 0, 0, 'WITHSCORES')
  local retry = 1
  if earliest[2] then retry = math.max(1, tonumber(earliest[2]) - now) end
  return {'refused', cjson.encode(snapshot(st, now)), retry}
end
redis.call('ZADD', BK.probes, now + lease_ms, lease_id)
-- Twice the lease, so a lapsed lease is usually seen (and reported) as reclaimed.
redis.call('PEXPIRE', BK.probes, 2 * lease_ms)
return {'probe', cjson.encode(snapshot(st, now))}
