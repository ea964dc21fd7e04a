-- A token bucket shared by every worker: take one token for a task name.
-- KEYS[1] = bucket hash (tokens, ts); ARGV[1] = rate (tokens per second),
-- ARGV[2] = now (seconds). The bucket holds at most one second of tokens
-- (at least 1). Returns 0 when a token was taken, else seconds to wait (as
-- a string, so Redis keeps the fraction).
local rate = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local capacity = math.max(rate, 1)
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or capacity)
local ts = tonumber(redis.call('HGET', KEYS[1], 'ts') or now)
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
-- %.17g: tostring() keeps 14 digits, which rounds a timestamp to 1e-4 s
-- (up to 0.05 token gained or lost per call at 1000/s).
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'ts', string.format('%.17g', now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
if wait == 0 then return 0 end
return string.format('%.17g', wait)
