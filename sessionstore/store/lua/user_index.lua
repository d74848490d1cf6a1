-- user_index: one user's entry in the user index, a field of a hash it shares with the
-- users of the same KeySpace.user_index hash; the value is the user's session ids,
-- separated by spaces, oldest first. Never the source of truth: an entry leaves with its
-- session (end, delete, rotate, resume, the sweep), readers drop ids of sessions they find
-- ended, and the repair job adds missing ids and drops stray ones. A user with no id left
-- has no field.
-- KEYS: the user's index hash
-- ARGV: mode, user_id, then
--   'add', session_id...           ids not there yet go last (create, repair)
--   'move', old_id, new_id         the new id takes the old one's place, or goes last
--                                  when the old one has gone (rotate, resume)
--   'remove', session_id...        (an ended session, ids a reader or repair found ended)
-- Reply: number of ids added (add, move) or removed (remove)
local key, mode, user = KEYS[1], ARGV[1], ARGV[2]
local ids, at = {}, {}
for id in string.gmatch(redis.call('HGET', key, user) or '', '%S+') do
  ids[#ids + 1] = id
  at[id] = #ids
end
local changed, dirty = 0, false
if mode == 'add' then
  for i = 3, #ARGV do
    if not at[ARGV[i]] then
      ids[#ids + 1] = ARGV[i]
      at[ARGV[i]] = #ids
      changed = changed + 1
    end
  end
elseif mode == 'move' then
  local old, new = ARGV[3], ARGV[4]
  if at[new] then
    if at[old] then
      table.remove(ids, at[old])
      dirty = true
    end
  elseif at[old] then
    ids[at[old]] = new
    changed = 1
  else
    ids[#ids + 1] = new
    changed = 1
  end
elseif mode == 'remove' then
  local gone = {}
  for i = 3, #ARGV do gone[ARGV[i]] = true end
  local kept = {}
  for _, id in ipairs(ids) do
    if gone[id] then changed = changed + 1 else kept[#kept + 1] = id end
  end
  ids = kept
end
if changed == 0 and not dirty then return 0 end
if #ids == 0 then
  redis.call('HDEL', key, user)
else
  redis.call('HSET', key, user, table.concat(ids, ' '))
end
return changed
