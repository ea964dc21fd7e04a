-- Publish frames. KEYS[1] = scheduled zset, KEYS[2] = etas hash (id -> eta
-- of a scheduled message, so a revocation outlives it), KEYS[3] = published
-- zset (member "<id>\n<created>", score the later of created and eta: the
-- reaper forgets it a day past that); then, per frame i, ARGV holds (id,
-- list key, wake key, frame, eta or "", published member) from
-- ARGV[2 + 6*(i-1)]; ARGV[1] = now.
-- A message whose member is already in the published zset was published
-- before (the outbox, or a publish retried after a lost reply): it is not
-- published again. A frame whose eta is in the future
-- waits in the scheduled zset; the others go to the tail of their list. A
-- wake token is pushed when a list goes from empty to non-empty, so idle
-- consumers blocked on the wake key wake up. Returns the number published.
local now = tonumber(ARGV[1])
local published = 0
for i = 2, #ARGV, 6 do
  local id, list, wake, frame, eta = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local member = ARGV[i + 5]
  local score = tonumber(string.sub(member, string.find(member, '\n', 1, true) + 1))
  if eta ~= '' and tonumber(eta) > score then score = tonumber(eta) end
  -- NX: added (1) only if this very message was never given before.
  if redis.call('ZADD', KEYS[3], 'NX', score, member) == 1 then
    published = published + 1
    if eta ~= '' and tonumber(eta) > now then
      redis.call('ZADD', KEYS[1], eta, frame)
      redis.call('HSET', KEYS[2], id, eta)
    elseif redis.call('RPUSH', list, frame) == 1 then
      redis.call('LPUSH', wake, '1')
      redis.call('LTRIM', wake, 0, 15)
    end
  end
end
return published
