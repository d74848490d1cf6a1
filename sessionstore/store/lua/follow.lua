-- follow: where a lease or lock taken on a session went after the session was
-- rotated, for its holder only. The holder proves itself with the lease id or
-- lock owner it holds: the successor is named only if that lease or lock sits
-- on it (rotate moved it there), so an id alone never leads to a live session.
-- KEYS: the rotated session's nine keys
-- ARGV: what ('requests' | 'conns' | 'lock'), token (lease id or lock owner),
--       then the shard's key prefixes for record, tomb, lock, upstreams
--       (successors share the shard, so every key shares its hash tag)
-- Reply: {'ok', session_id} | {'no'}
local k = session_keys(1)
local what, token = ARGV[1], ARGV[2]
local tomb = k.tomb
for _ = 1, 8 do  -- a few rotations in a row; a longer chain is not followed
  local t = redis.call('HMGET', tomb, 'status', 'superseded_by')
  if t[1] ~= 'rotated' or not t[2] or t[2] == '' then return {'no'} end
  local id = t[2]
  local held
  if what == 'lock' then
    held = redis.call('HGET', ARGV[5] .. id, 'owner') == token
  else
    -- The lease is in the record (its kind's slot or a field of its own), which rotate
    -- moved under the new id.
    local prefix, _, slot = lease_names(what)
    local r = redis.call('HMGET', ARGV[3] .. id, slot, prefix .. token)
    held = slot_lease(r[1]) == token or r[2] ~= false
  end
  if held then return {'ok', id} end
  tomb = ARGV[4] .. id
end
return {'no'}
