-- Fetch up to ARGV[1] frames for one consumer, atomically moving them into
-- its in-flight hash (field = message id), so a consumer that dies after
-- this script loses nothing.
-- KEYS[1] = in-flight hash, KEYS[2] = scheduled zset,
-- KEYS[3 .. 2+nwake] = wake keys, KEYS[3+nwake ..] = list keys in fetch order.
-- ARGV[1] = count, ARGV[2] = now, ARGV[3] = nwake, ARGV[4] = revoked zset
-- key, ARGV[5] = dead-letter hash key, ARGV[6] = key prefix, ARGV[7] = etas
-- hash key (a scheduled message's id leaves it when it comes due).
-- Frames of revoked tasks are dropped, and returned apart so the worker can
-- record them. A frame that is not "<id>\n<its own list key>\n<body>" (id:
-- 1 to 255 printable ASCII characters) was not written by djtasks: it goes
-- to the dead letters as it is, so it can neither break this script halfway
-- nor point a requeue at another key. A second frame with an id already in
-- flight for this consumer goes back to the tail of its list.
-- Returns {frames, next eta or false, revoked frames}.
local count = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local nwake = tonumber(ARGV[3])
local scheduled = KEYS[2]
local revoked_key = ARGV[4]
local dead_key = ARGV[5]
local prefix = ARGV[6]
local etas_key = ARGV[7]

-- The id and list key of a well-formed frame, or nil.
local function parse(frame)
  local a = string.find(frame, '\n', 1, true)
  if not a or a < 2 or a > 256 then return nil end
  local b = string.find(frame, '\n', a + 1, true)
  if not b then return nil end
  local id = string.sub(frame, 1, a - 1)
  if string.find(id, '[^\33-\126]') then return nil end
  local list = string.sub(frame, a + 1, b - 1)
  if string.sub(list, 1, #prefix + 2) ~= prefix .. 'q:' or not string.find(list, ':%d$') then
    return nil
  end
  return id, list
end

local function bury(frame, queue)
  local n = redis.call('INCR', prefix .. 'malformed')
  local header = cjson.encode({queue = queue, time = now,
    reason = 'malformed frame (not written by djtasks): ' .. #frame .. ' bytes'})
  redis.call('HSET', dead_key, 'malformed-' .. n, header .. '\n' .. frame)
end

-- Due scheduled frames move to their list first: ZREM decides which caller
-- moves a frame, so two workers never both move (and run) one eta task.
local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 100)
for _, frame in ipairs(due) do
  if redis.call('ZREM', scheduled, frame) == 1 then
    local id, list = parse(frame)
    if id then
      redis.call('RPUSH', list, frame)
      redis.call('HDEL', etas_key, id)
    else
      bury(frame, '?')
    end
  end
end

local out = {}
local revoked = {}
for i = 3 + nwake, #KEYS do
  if count <= 0 then break end
  local frames = redis.call('LPOP', KEYS[i], count)
  if frames then
    for _, frame in ipairs(frames) do
      local id, list = parse(frame)
      if not id or list ~= KEYS[i] then
        bury(frame, string.sub(KEYS[i], #prefix + 3, -3))
      elseif redis.call('ZSCORE', revoked_key, id) then
        -- Revoked while queued: never delivered, on any worker.
        revoked[#revoked + 1] = frame
      elseif redis.call('HSETNX', KEYS[1], id, frame) == 0 then
        redis.call('RPUSH', KEYS[i], frame)
      else
        out[#out + 1] = frame
        count = count - 1
      end
    end
  end
end

-- More work left: wake a sibling consumer that may be blocked.
if count <= 0 then
  for i = 3, 2 + nwake do
    redis.call('LPUSH', KEYS[i], '1')
    redis.call('LTRIM', KEYS[i], 0, 15)
  end
end

local nxt = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
return {out, nxt[2] or false, revoked}
