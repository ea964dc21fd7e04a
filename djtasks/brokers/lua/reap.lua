-- Release consumers: every frame they hold goes back to the front of its
-- list, their running marker is read and cleared, and they are forgotten.
-- KEYS[1] = consumers zset (member = consumer, score = lease deadline),
-- KEYS[2] = running hash (consumer -> "<id>\n<flags>\n<sha1 of its frame>"),
-- KEYS[3] = deaths hash (id -> executors it was running in when they died),
-- KEYS[4] = dead-letter hash.
-- ARGV[1] = key prefix, ARGV[2] = now or "", ARGV[3] = max deaths,
-- ARGV[4] = "drop:<id>" to ack the running task instead of requeueing it if
-- it is <id> (killed for its hard time limit), "shutdown" to requeue it
-- without counting a death (the worker chose to stop it), else "",
-- ARGV[5..] = consumers to release regardless
-- of their lease. With ARGV[2] = now, also releases every consumer whose
-- lease ran out.
-- The running task, if still in flight (acks_late), is requeued unless its
-- flags hold "k" (reject_on_worker_lost=False) or ARGV[4] is "drop"; one
-- that was running in ARGV[3] dead executors goes to the dead letters.
-- Each consumer's started set (<prefix>started:<consumer>: tasks it started
-- whose rows it never reported written) is returned and forgotten.
-- Returns a flat list per consumer: consumer, running id or "",
-- what became of it ("requeued", "dropped", "dead", "acked" or ""),
-- number of requeued ids, ids..., number of unsettled ids, ids...
local prefix = ARGV[1]
local max_deaths = tonumber(ARGV[3])
local consumers = {}
for i = 5, #ARGV do consumers[#consumers + 1] = ARGV[i] end
if ARGV[2] ~= '' then
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
  for _, c in ipairs(dead) do consumers[#consumers + 1] = c end
end

local function requeue(frame)
  local a = string.find(frame, '\n', 1, true)
  local b = string.find(frame, '\n', a + 1, true)
  local list = string.sub(frame, a + 1, b - 1)
  redis.call('LPUSH', list, frame)
  -- list key is <prefix>q:<queue>:<priority digit>; wake key <prefix>wake:<queue>
  local wake = prefix .. 'wake:' .. string.sub(list, #prefix + 3, -3)
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 15)
end

local out = {}
for _, consumer in ipairs(consumers) do
  local inflight = prefix .. 'inflight:' .. consumer
  local marker = redis.call('HGET', KEYS[2], consumer) or ''
  local running, flags, token = '', '', ''
  local nl = string.find(marker, '\n', 1, true)
  if nl then
    running = string.sub(marker, 1, nl - 1)
    local nl2 = string.find(marker, '\n', nl + 1, true)
    flags = string.sub(marker, nl + 1, (nl2 or 0) - 1)
    if nl2 then token = string.sub(marker, nl2 + 1) end
  else
    running = marker
  end
  local fate = ''
  if running ~= '' then
    local frame = redis.call('HGET', inflight, running)
    -- Only the very frame that started is the running one: a later frame
    -- with the same id (its retry) is merely fetched, and goes back below.
    if frame and redis.sha1hex(frame) == token then
      redis.call('HDEL', inflight, running)
      if ARGV[4] == 'drop:' .. running or string.find(flags, 'k', 1, true) then
        fate = 'dropped'
      elseif ARGV[4] == 'shutdown' then
        requeue(frame)
        fate = 'requeued'
      else
        local deaths = redis.call('HINCRBY', KEYS[3], running, 1)
        if deaths >= max_deaths then
          local a = string.find(frame, '\n', 1, true)
          local b = string.find(frame, '\n', a + 1, true)
          local list = string.sub(frame, a + 1, b - 1)
          local header = cjson.encode({
            id = running,
            queue = string.sub(list, #prefix + 3, -3),
            reason = 'its executor died while running it ' .. deaths .. ' times',
            time = tonumber(ARGV[2]) or tonumber(redis.call('TIME')[1]),
          })
          local key = running
          if redis.call('HEXISTS', KEYS[4], key) == 1 then
            key = running .. ':' .. redis.call('INCR', prefix .. 'malformed')
          end
          redis.call('HSET', KEYS[4], key, header .. '\n' .. string.sub(frame, b + 1))
          redis.call('HDEL', KEYS[3], running)
          fate = 'dead'
        else
          requeue(frame)
          fate = 'requeued'
        end
      end
    else
      fate = 'acked'
    end
  end
  local all = redis.call('HGETALL', inflight)
  out[#out + 1] = consumer
  out[#out + 1] = running
  out[#out + 1] = fate
  out[#out + 1] = #all / 2
  for i = 1, #all, 2 do
    requeue(all[i + 1])
    out[#out + 1] = all[i]
  end
  redis.call('DEL', inflight)
  local started_key = prefix .. 'started:' .. consumer
  local unsettled = {}
  for _, id in ipairs(redis.call('SMEMBERS', started_key)) do
    if id ~= running then unsettled[#unsettled + 1] = id end
  end
  out[#out + 1] = #unsettled
  for _, id in ipairs(unsettled) do out[#out + 1] = id end
  redis.call('DEL', started_key)
  redis.call('HDEL', KEYS[2], consumer)
  redis.call('ZREM', KEYS[1], consumer)
end
return out
