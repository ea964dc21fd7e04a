-- Fetch up to ARGV[1] frames for one consumer, atomically moving them into
-- its in-flight hash (field = message id), so a consumer that dies after
-- this script loses nothing.
-- KEYS[1] = in-flight hash, KEYS[2] = scheduled zset,
-- KEYS[3 .. 2+nwake] = wake keys, KEYS[3+nwake ..] = list keys in fetch order.
-- ARGV[1] = count, ARGV[2] = now, ARGV[3] = nwake, ARGV[4] = revoked zset key.
-- Frames of revoked tasks are dropped, and returned apart so the worker can
-- record them. Returns {frames, next eta or false, revoked frames}.
local count = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local nwake = tonumber(ARGV[3])
local scheduled = KEYS[2]
local revoked_key = ARGV[4]

-- Due scheduled frames move to their list first: ZREM decides which caller
-- moves a frame, so two workers never both move (and run) one eta task.
local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 100)
for _, frame in ipairs(due) do
  if redis.call('ZREM', scheduled, frame) == 1 then
    local a = string.find(frame, '\n', 1, true)
    local b = string.find(frame, '\n', a + 1, true)
    redis.call('RPUSH', string.sub(frame, a + 1, b - 1), frame)
  end
end

local out = {}
local revoked = {}
local fields = {}
for i = 3 + nwake, #KEYS do
  if count <= 0 then break end
  local frames = redis.call('LPOP', KEYS[i], count)
  if frames then
    for _, frame in ipairs(frames) do
      local a = string.find(frame, '\n', 1, true)
      local id = string.sub(frame, 1, a - 1)
      if redis.call('ZSCORE', revoked_key, id) then
        -- Revoked while queued: never delivered, on any worker.
        revoked[#revoked + 1] = frame
      else
        fields[#fields + 1] = id
        fields[#fields + 1] = frame
        out[#out + 1] = frame
        count = count - 1
      end
    end
  end
end
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
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
