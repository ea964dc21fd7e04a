-- Publish frames. KEYS[1] = scheduled zset, KEYS[2] = etas hash (id -> eta
-- of a scheduled message, so a revocation outlives it); then, per frame i,
-- ARGV holds (id, list key, wake key, frame, eta or "") from
-- ARGV[2 + 5*(i-1)]; ARGV[1] = now.
-- A frame whose eta is in the future waits in the scheduled zset; the others
-- go to the tail of their list. A wake token is pushed when a list goes from
-- empty to non-empty, so idle consumers blocked on the wake key wake up.
local now = tonumber(ARGV[1])
for i = 2, #ARGV, 5 do
  local id, list, wake, frame, eta = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if eta ~= '' and tonumber(eta) > now then
    redis.call('ZADD', KEYS[1], eta, frame)
    redis.call('HSET', KEYS[2], id, eta)
  elseif redis.call('RPUSH', list, frame) == 1 then
    redis.call('LPUSH', wake, '1')
    redis.call('LTRIM', wake, 0, 15)
  end
end
return true
