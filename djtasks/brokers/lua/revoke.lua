-- Revoke task ids: remember them (a zset scored by the later of now and the
-- task's eta, if it is scheduled; the reaper forgets a revocation a day past
-- its score) so no worker ever starts them, and with ARGV[2] = "1" also mark
-- them to be terminated.
-- KEYS[1] = revoked zset, KEYS[2] = terminate zset, KEYS[3] = running hash,
-- KEYS[4] = etas hash (id -> eta of a scheduled message).
-- ARGV[1] = now, ARGV[2] = "1" or "", ARGV[3..] = task ids.
-- Returns the ids no consumer is running right now.
local running = {}
for _, marker in ipairs(redis.call('HVALS', KEYS[3])) do
  local nl = string.find(marker, '\n', 1, true)
  running[nl and string.sub(marker, 1, nl - 1) or marker] = true
end
local idle = {}
for i = 3, #ARGV do
  local score = tonumber(ARGV[1])
  local eta = tonumber(redis.call('HGET', KEYS[4], ARGV[i]) or '0')
  if eta > score then score = eta end
  redis.call('ZADD', KEYS[1], score, ARGV[i])
  if ARGV[2] == '1' then redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i]) end
  if not running[ARGV[i]] then idle[#idle + 1] = ARGV[i] end
end
return idle
