-- Revoke task ids: remember them (a zset scored by time) so no worker ever
-- starts them, and with ARGV[2] = "1" also mark them to be terminated.
-- KEYS[1] = revoked zset, KEYS[2] = terminate zset, KEYS[3] = running hash.
-- ARGV[1] = now, ARGV[2] = "1" or "", ARGV[3..] = task ids.
-- Returns the ids no consumer is running right now.
local running = {}
for _, marker in ipairs(redis.call('HVALS', KEYS[3])) do
  local nl = string.find(marker, '\n', 1, true)
  running[nl and string.sub(marker, 1, nl - 1) or marker] = true
end
local idle = {}
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
  if ARGV[2] == '1' then redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i]) end
  if not running[ARGV[i]] then idle[#idle + 1] = ARGV[i] end
end
return idle
