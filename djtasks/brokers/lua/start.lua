-- A consumer starts a task: ack what it asks to, refuse a revoked task or
-- one it no longer holds, and record what it is running so a reaper knows
-- what died with it.
-- KEYS[1] = in-flight hash, KEYS[2] = running hash, KEYS[3] = revoked zset,
-- KEYS[4] = the consumer's started set (tasks whose rows are not yet written),
-- KEYS[5] = deaths hash (an acked task's death count is forgotten, as in ack()).
-- ARGV[1] = consumer, ARGV[2] = task id, ARGV[3] = flags ("" or "k":
-- reject_on_worker_lost=False), ARGV[4] = "1" to ack the task itself
-- (acks_late=False), ARGV[5] = "1" to add it to the started set,
-- ARGV[6] = the sha1 of the frame the consumer holds ("" if unknown),
-- ARGV[7..] = other ids to ack.
-- The marker is "<id>\n<flags>\n<sha1 of the frame>", so a reaper can tell
-- the running frame from a later one with the same id (a retry).
-- Returns 1 to run it, 0 if it was revoked (it is then acked), -1 if this
-- consumer no longer holds it (its lease ran out and it was given back).
-- A start asked again after its reply was lost (acked then, so no longer
-- held) finds the marker it wrote, naming this very frame (ARGV[6]): 1
-- again. A marker of an earlier frame with the same id (a retry's attempt
-- before) is not this start's, nor is one a reaper cleared.
local function ack(id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[5], id)
end
for i = 7, #ARGV do ack(ARGV[i]) end
local frame = redis.call('HGET', KEYS[1], ARGV[2])
if not frame then
  local marker = redis.call('HGET', KEYS[2], ARGV[1])
  if ARGV[6] ~= '' and marker and string.sub(marker, 1, #ARGV[2] + 1) == ARGV[2] .. '\n'
      and string.sub(marker, -#ARGV[6]) == ARGV[6] then
    return 1
  end
  return -1
end
if redis.call('ZSCORE', KEYS[3], ARGV[2]) then
  ack(ARGV[2])
  return 0
end
if ARGV[4] == '1' then ack(ARGV[2]) end
if ARGV[5] == '1' then redis.call('SADD', KEYS[4], ARGV[2]) end
redis.call('HSET', KEYS[2], ARGV[1],
           ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. redis.sha1hex(frame))
return 1
