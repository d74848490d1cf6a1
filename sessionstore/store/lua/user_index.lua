-- user_index: one user's entry in the user index. It is a field of a hash shared with
-- the users of the same KeySpace.user_index hash, whose value is the user's session ids
-- separated by spaces, oldest first, while they fit in 64 bytes (two ids: so the shared
-- hash stays a compact listpack); a user with more has '*' there and its ids in a sorted
-- set of its own in the same slot (KeySpace.user_sessions), scored by the order they came
-- in, so each call costs O(log n) and not a copy of a long value. Back to the field once
-- two or fewer are left. Never the source of truth: an entry leaves with its session
-- (end, delete, rotate, resume, the sweep), readers drop ids of sessions they find ended,
-- and the repair job adds missing ids and drops stray ones. No ids left: no field.
-- KEYS: the user's index hash, the user's own sorted set
-- ARGV: mode, user_id, then
--   'add', session_id...           ids not there yet go last (create, repair)
--   'move', old_id, new_id         the new id takes the old one's place, or goes last
--                                  when the old one has gone (rotate, resume)
--   'remove', session_id...        (an ended session, ids a reader or repair found ended)
-- Reply: number of ids added (add, move) or removed (remove)
local hash, own, mode, user = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local FIELD_BYTES, OWN = 64, '*'
local value = redis.call('HGET', hash, user) or ''
local changed = 0

-- The user's ids as one padded string (' a b '), worked on with plain string.find.
local function find(ids, id) return string.find(ids, ' ' .. id .. ' ', 1, true) end
local function drop(ids, id)
  local at = find(ids, id)
  if not at then return ids, false end
  return string.sub(ids, 1, at) .. string.sub(ids, at + #id + 2), true
end

-- A sorted set's next score: one past its last.
local function next_score()
  local last = redis.call('ZRANGE', own, -1, -1, 'WITHSCORES')
  return (tonumber(last[2]) or 0) + 1
end

if value ~= OWN then
  local ids = ' ' .. value .. (value == '' and '' or ' ')
  if mode == 'add' then
    for i = 3, #ARGV do
      if not find(ids, ARGV[i]) then
        ids = ids .. ARGV[i] .. ' '
        changed = changed + 1
      end
    end
  elseif mode == 'move' then
    local old, new = ARGV[3], ARGV[4]
    local at = find(ids, old)
    if find(ids, new) then
      ids = drop(ids, old)
    elseif at then
      ids = string.sub(ids, 1, at) .. new .. string.sub(ids, at + #old + 1)
      changed = 1
    else
      ids = ids .. new .. ' '
      changed = 1
    end
  elseif mode == 'remove' then
    local gone
    for i = 3, #ARGV do
      ids, gone = drop(ids, ARGV[i])
      if gone then changed = changed + 1 end
    end
  end
  ids = string.sub(ids, 2, -2)
  if ids == value then return changed end
  if ids == '' then
    redis.call('HDEL', hash, user)
  elseif #ids <= FIELD_BYTES then
    redis.call('HSET', hash, user, ids)
  else
    -- Too many for the field: the user's ids move to its own sorted set, in order.
    local score, args = 0, {}
    for id in string.gmatch(ids, '%S+') do
      score = score + 1
      args[#args + 1] = score
      args[#args + 1] = id
    end
    redis.call('DEL', own)
    redis.call('ZADD', own, unpack(args))
    redis.call('HSET', hash, user, OWN)
  end
  return changed
end

if mode == 'add' then
  local score = next_score()
  for i = 3, #ARGV do
    if redis.call('ZADD', own, 'NX', score, ARGV[i]) == 1 then
      score = score + 1
      changed = changed + 1
    end
  end
elseif mode == 'move' then
  local old, new = ARGV[3], ARGV[4]
  local at = redis.call('ZSCORE', own, old)
  if redis.call('ZSCORE', own, new) then
    if at then redis.call('ZREM', own, old) end
  else
    if at then redis.call('ZREM', own, old) end
    redis.call('ZADD', own, at or next_score(), new)
    changed = 1
  end
elseif mode == 'remove' then
  for i = 3, #ARGV do changed = changed + redis.call('ZREM', own, ARGV[i]) end
  -- Few enough for the field again (or none): back to it.
  if redis.call('ZCARD', own) <= 2 then
    local ids = table.concat(redis.call('ZRANGE', own, 0, -1), ' ')
    if #ids <= FIELD_BYTES then
      redis.call('DEL', own)
      if ids == '' then
        redis.call('HDEL', hash, user)
      else
        redis.call('HSET', hash, user, ids)
      end
    end
  end
end
return changed
