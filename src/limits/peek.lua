-- Reads the state of a subject's limits without changing it (GET /quota).
-- KEYS[i] is the counter of check i; ARGV[1] = number of checks, ARGV[2] unused, then five
-- integers per check (`Check::script_args`, the per-check part of admit.lua's arguments).
-- Returns per check {used, remaining, reset ms}.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local n = tonumber(ARGV[1])
local out = {}
for i = 1, n do
  local at = 2 + (i - 1) * 5
  local kind = tonumber(ARGV[at + 1])
  local a = tonumber(ARGV[at + 2])
  local b = tonumber(ARGV[at + 3])
  local c = tonumber(ARGV[at + 4])
  local d = tonumber(ARGV[at + 5])
  local key = KEYS[i]
  local used, remaining, reset = 0, 0, 0
  if kind == 1 then
    local interval = b * 1000 / a
    local tat = tonumber(redis.call('GET', key) or now_us)
    if tat < now_us then tat = now_us end
    used = math.ceil((tat - now_us) / interval)
    remaining = math.max(0, c - used)
    reset = math.ceil((tat - now_us) / 1000)
  elseif kind == 2 then
    used = redis.call('ZCOUNT', key, '(' .. now_ms, '+inf')
    remaining = math.max(0, a - used)
  else
    used = tonumber(redis.call('GET', key) or '0')
    remaining = math.max(0, a - used)
    reset = d
  end
  out[#out + 1] = used
  out[#out + 1] = remaining
  out[#out + 1] = reset
end
return out
