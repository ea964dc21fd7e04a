-- Move a fetched frame from a consumer's in-flight hash to the scheduled
-- zset, to be delivered again at ARGV[2] (a rate limit said "not yet").
-- KEYS[1] = in-flight hash, KEYS[2] = scheduled zset; ARGV[1] = id.
local frame = redis.call('HGET', KEYS[1], ARGV[1])
if not frame then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], frame)
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
