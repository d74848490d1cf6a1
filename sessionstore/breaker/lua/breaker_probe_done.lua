-- breaker_probe_done: a half-open probe ends. A success counts towards closing
-- (half_open -> closed after `probes` successes); a failure re-opens the breaker
-- (half_open -> open); 'cancel' returns the lease so another probe may go.
-- A probe whose lease lapsed or whose period ended is not counted.
-- KEYS: the breaker's five keys (BreakerKeys.ordered())
-- ARGV: common (name, channel, events_maxlen, retention_ms, open_ms),
--       lease_id, outcome ('success' | 'failure' | 'cancel'), probes
-- Reply: {'counted' | 'returned' | 'lost', snapshot JSON}
local now = now_ms()
local st = load_state()
local lease_id, outcome, probes = ARGV[6], ARGV[7], tonumber(ARGV[8])
local deadline = redis.call('ZSCORE', BK.probes, lease_id)
if st.state ~= 'half_open' or not deadline then
  return {'lost', cjson.encode(snapshot(st, now))}
end
redis.call('ZREM', BK.probes, lease_id)
if tonumber(deadline) <= now then
  breaker_event(now, 'probe_reclaimed', {'count', 1, 'gen', st.gen})
  return {'lost', cjson.encode(snapshot(st, now))}
end
if outcome == 'cancel' then
  return {'returned', cjson.encode(snapshot(st, now))}
end
if outcome == 'failure' then
  transition(st, 'open', 'probe_failed', now)
else
  st.successes = redis.call('HINCRBY', BK.state, 'successes', 1)
  if st.successes >= probes then transition(st, 'closed', 'probes_succeeded', now) end
end
return {'counted', cjson.encode(snapshot(st, now))}
