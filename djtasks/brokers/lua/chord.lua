-- Record chord members as done. KEYS[1] = the chord's set of done member
-- ids ({p}:chord:<chord id>); ARGV[1] = the chord's size, ARGV[2] = ttl in
-- milliseconds (the set expires that long after its last members), ARGV[3..]
-- = member ids. A set, not a counter: a member run twice is counted once.
-- Returns 1 if every member is recorded now (also for members recorded
-- before: a rerun of the last one still sees the chord complete), else 0.
redis.call('SADD', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 1 end
return 0
