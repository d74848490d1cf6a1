-- breaker_control: an operator's action across the fleet. force_open -> forced_open
-- (isolate), force_closed -> forced_closed, reset -> closed with an empty window.
-- Always a transition (a new generation), recorded in the event stream and in the
-- audit stream (who, when, why), and announced on the channel.
-- KEYS: the breaker's five keys (BreakerKeys.ordered())
-- ARGV: common (name, channel, events_maxlen, retention_ms, open_ms),
--       action ('force_open' | 'force_closed' | 'reset'), actor, reason, audit_maxlen
-- Reply: snapshot JSON after the action
local targets = {force_open = 'forced_open', force_closed = 'forced_closed', reset = 'closed'}
local action, actor, reason = ARGV[6], ARGV[7], ARGV[8]
local to = targets[action]
if not to then return redis.error_reply('ERR unknown breaker action ' .. tostring(action)) end
local now = now_ms()
local st = load_state()
local from = st.state
transition(st, to, action, now, actor, reason)
redis.call('XADD', BK.audit, 'MAXLEN', tonumber(ARGV[9]), '*', 'action', action,
  'actor', actor, 'reason', reason, 'at', now, 'from', from, 'to', to, 'gen', st.gen)
keep()
return cjson.encode(snapshot(st, now))
