-- Hold a duty (one worker at a time does it): KEYS[1] = the duty's key,
-- ARGV[1] = holder, ARGV[2] = ttl in milliseconds. The holder keeps it by
-- asking again before the ttl runs out; another gets it once it has.
-- Returns 1 if ARGV[1] holds it now.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
