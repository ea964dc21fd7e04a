-- Give fetched frames back to the front of their lists.
-- KEYS[1] = in-flight hash; ARGV[1] = key prefix; ARGV[2..] = message ids.
-- Returns the ids given back.
local given = {}
-- Backwards, so the first id given back is the first delivered again.
for i = #ARGV, 2, -1 do
  local frame = redis.call('HGET', KEYS[1], ARGV[i])
  if frame then
    local a = string.find(frame, '\n', 1, true)
    local b = string.find(frame, '\n', a + 1, true)
    local list = string.sub(frame, a + 1, b - 1)
    redis.call('LPUSH', list, frame)
    redis.call('HDEL', KEYS[1], ARGV[i])
    -- list key is <prefix>q:<queue>:<priority digit>; wake key <prefix>wake:<queue>
    local wake = ARGV[1] .. 'wake:' .. string.sub(list, #ARGV[1] + 3, -3)
    redis.call('LPUSH', wake, '1')
    redis.call('LTRIM', wake, 0, 15)
    given[#given + 1] = ARGV[i]
  end
end
return given
