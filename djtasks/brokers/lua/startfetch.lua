-- Start one task and fetch the next frames, in one call: start.lua, then
-- fetch.lua, each on its own keys and arguments. The broker defines them
-- above this as the functions start(KEYS, ARGV) and fetch(KEYS, ARGV),
-- the two files unchanged.
-- ARGV[1] = how many of KEYS are start's (the rest are fetch's), ARGV[2] =
-- how many arguments from ARGV[3] on are start's (the rest are fetch's).
-- Returns {start's reply, fetch's reply}.
local nkeys, nargs = tonumber(ARGV[1]), tonumber(ARGV[2])
local start_keys, start_args, fetch_keys, fetch_args = {}, {}, {}, {}
for i = 1, #KEYS do
  if i <= nkeys then start_keys[#start_keys + 1] = KEYS[i]
  else fetch_keys[#fetch_keys + 1] = KEYS[i] end
end
for i = 3, #ARGV do
  if i <= 2 + nargs then start_args[#start_args + 1] = ARGV[i]
  else fetch_args[#fetch_args + 1] = ARGV[i] end
end
local started = start(start_keys, start_args)
return {started, fetch(fetch_keys, fetch_args)}
