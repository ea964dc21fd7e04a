-- The fetch of a consumer woken from its wait (fetch.lua), which also starts
-- the first frame it returns (start.lua), so the woken executor runs it
-- without a start round trip of its own. The broker defines fetch(KEYS,
-- ARGV) and start(KEYS, ARGV) above this, the two files unchanged.
-- ARGV[1] = how many of KEYS are start's (the rest are fetch's), ARGV[2] =
-- the consumer, ARGV[3] = n, the number of flag groups; then per group
-- start.lua's three flags (redeliver, ack, track) and the names of the tasks
-- started with them, each between newlines; then fetch's ARGV.
-- The first frame is started only if the first "task" key of its body (the
-- envelope's own: a string inside the arguments has its quotes escaped)
-- names a task of a group, and its body says "expires":null and has no
-- "ignore_result" key (a per-call one). Anything else, or anything this
-- reads wrongly, the worker decodes, checks and starts as ever.
-- Returns {fetch's reply, the id of the frame started or false}.
local nkeys, ngroups = tonumber(ARGV[1]), tonumber(ARGV[3])
local start_keys, fetch_keys, fetch_args = {}, {}, {}
for i = 1, #KEYS do
  if i <= nkeys then start_keys[#start_keys + 1] = KEYS[i]
  else fetch_keys[#fetch_keys + 1] = KEYS[i] end
end
local first_fetch_arg = 4 + 4 * ngroups
for i = first_fetch_arg, #ARGV do fetch_args[#fetch_args + 1] = ARGV[i] end
local reply = fetch(fetch_keys, fetch_args)
local frame = reply[1][1]
if not frame then return {reply, false} end

local a = string.find(frame, '\n', 1, true)
local b = string.find(frame, '\n', a + 1, true)
local _, e = string.find(frame, '"task":"', b + 1, true)
if not e then return {reply, false} end
local q = string.find(frame, '"', e + 1, true)
if not q then return {reply, false} end
local name = string.sub(frame, e + 1, q - 1)
if string.find(name, '\\', 1, true) or not string.find(frame, '"expires":null', b + 1, true)
    or string.find(frame, '"ignore_result":', b + 1, true) then
  return {reply, false}
end
for g = 0, ngroups - 1 do
  local base = 4 + 4 * g
  if string.find(ARGV[base + 3], '\n' .. name .. '\n', 1, true) then
    local id = string.sub(frame, 1, a - 1)
    local code = start(start_keys, {ARGV[2], id, ARGV[base], ARGV[base + 1], ARGV[base + 2],
                                    redis.sha1hex(frame)})
    if code == 1 then return {reply, id} end
    return {reply, false}
  end
end
return {reply, false}
