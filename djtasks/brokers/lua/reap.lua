-- Release consumers: every frame they hold goes back to the front of its
-- list, their running marker is read and cleared, and they are forgotten.
-- KEYS[1] = consumers zset (member = consumer, score = lease deadline),
-- KEYS[2] = running hash (consumer -> id of the task it started last).
-- ARGV[1] = key prefix, ARGV[2] = now or "", ARGV[3..] = consumers to
-- release regardless of their lease. With ARGV[2] = now, also releases
-- every consumer whose lease ran out.
-- Returns a flat list: consumer, running id or "", number of ids, ids..., ...
local prefix = ARGV[1]
local consumers = {}
for i = 3, #ARGV do consumers[#consumers + 1] = ARGV[i] end
if ARGV[2] ~= '' then
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
  for _, c in ipairs(dead) do consumers[#consumers + 1] = c end
end
local out = {}
for _, consumer in ipairs(consumers) do
  local inflight = prefix .. 'inflight:' .. consumer
  local all = redis.call('HGETALL', inflight)
  out[#out + 1] = consumer
  out[#out + 1] = redis.call('HGET', KEYS[2], consumer) or ''
  out[#out + 1] = #all / 2
  for i = 1, #all, 2 do
    local frame = all[i + 1]
    local a = string.find(frame, '\n', 1, true)
    local b = string.find(frame, '\n', a + 1, true)
    local list = string.sub(frame, a + 1, b - 1)
    redis.call('LPUSH', list, frame)
    -- list key is <prefix>q:<queue>:<priority digit>; wake key <prefix>wake:<queue>
    local wake = prefix .. 'wake:' .. string.sub(list, #prefix + 3, -3)
    redis.call('LPUSH', wake, '1')
    redis.call('LTRIM', wake, 0, 15)
    out[#out + 1] = all[i]
  end
  redis.call('DEL', inflight)
  redis.call('HDEL', KEYS[2], consumer)
  redis.call('ZREM', KEYS[1], consumer)
end
return out
