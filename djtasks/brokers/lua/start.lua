-- A consumer starts a task: ack what it asks to, refuse a revoked task, and
-- record what it is running so a reaper knows what died with it.
-- KEYS[1] = in-flight hash, KEYS[2] = running hash, KEYS[3] = revoked zset.
-- ARGV[1] = consumer, ARGV[2] = task id, ARGV[3] = running marker
-- ("<id>" or "<id>\n<flags>"), ARGV[4..] = ids to ack.
-- Returns 1 to run it, 0 if it was revoked (then it is acked too).
for i = 4, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
if redis.call('ZSCORE', KEYS[3], ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
