-- Purge a queue: delete every frame waiting in its lists, due scheduled
-- frames of the queue included (moved first, as fetch.lua moves them).
-- KEYS[1] = scheduled zset, KEYS[2] = etas hash, KEYS[3..] = the queue's
-- lists, highest priority first; ARGV[1] = now.
-- Returns the ids of the frames deleted, in fetch order ("" for a frame
-- with no id line: it was not written by djtasks, and is deleted too).
local now = tonumber(ARGV[1])
local lists = {}
for i = 3, #KEYS do lists[KEYS[i]] = true end

local function id_and_list(frame)
  local a = string.find(frame, '\n', 1, true)
  if not a then return '', nil end
  local b = string.find(frame, '\n', a + 1, true)
  if not b then return string.sub(frame, 1, a - 1), nil end
  return string.sub(frame, 1, a - 1), string.sub(frame, a + 1, b - 1)
end

-- A due scheduled frame of this queue is ready already: it goes too. The
-- others (other queues, or not yet due) stay where they are.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, frame in ipairs(due) do
  local id, list = id_and_list(frame)
  if list and lists[list] then
    redis.call('ZREM', KEYS[1], frame)
    redis.call('HDEL', KEYS[2], id)
    redis.call('RPUSH', list, frame)
  end
end

local out = {}
for i = 3, #KEYS do
  for _, frame in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do
    out[#out + 1] = (id_and_list(frame))
  end
  redis.call('DEL', KEYS[i])
end
return out
