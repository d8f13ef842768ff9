-- Admits one request against every limit that applies to it, all or nothing, on Valkey's clock.
-- KEYS[i] is the counter of check i; all share one hash tag, so one slot in a cluster.
-- ARGV[1] = number of checks, ARGV[2] = lease id, then five integers per check:
--   kind 1, rate (GCRA):   limit per period, period ms, capacity (units), cost (units)
--   kind 2, concurrency:   max leases, lease ttl ms, 0, 0
--   kind 3, window budget: budget, key ttl ms, cost, ms until the window ends
-- Returns {admitted, denied check (1-based, 0 = none), retry after ms (-1 = never),
--          then per check: remaining after this request (before it, when denied), reset ms}.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local n = tonumber(ARGV[1])
local lease = ARGV[2]
local out = {1, 0, 0}
local writes = {}
-- One MGET reads every rate and budget counter.
local string_keys, slot_of = {}, {}
for i = 1, n do
  if tonumber(ARGV[2 + (i - 1) * 5 + 1]) ~= 2 then
    string_keys[#string_keys + 1] = KEYS[i]
    slot_of[i] = #string_keys
  end
end
local values = {}
if #string_keys > 0 then
  values = redis.call('MGET', (table.unpack or unpack)(string_keys))
end
for i = 1, n do
  local at = 2 + (i - 1) * 5
  local kind = tonumber(ARGV[at + 1])
  local a = tonumber(ARGV[at + 2])
  local b = tonumber(ARGV[at + 3])
  local c = tonumber(ARGV[at + 4])
  local d = tonumber(ARGV[at + 5])
  local key = KEYS[i]
  local remaining, reset, retry = 0, 0, 0
  if kind == 1 then
    local interval = b * 1000 / a
    local tolerance = c * interval
    local tat = tonumber(values[slot_of[i]] or now_us)
    if tat < now_us then tat = now_us end
    local new_tat = tat + d * interval
    if d > c then
      retry = -1
    elseif new_tat - now_us > tolerance then
      retry = math.ceil((new_tat - now_us - tolerance) / 1000)
    end
    local level = tat
    if retry == 0 then
      level = new_tat
      writes[#writes + 1] = {1, key, new_tat, math.ceil((new_tat - now_us) / 1000) + 1000}
    end
    remaining = math.max(0, math.floor((tolerance - (level - now_us)) / interval))
    reset = math.ceil((level - now_us) / 1000)
  elseif kind == 2 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
    local held = redis.call('ZCARD', key)
    if held >= a then
      retry = 1000
    else
      held = held + 1
      writes[#writes + 1] = {2, key, now_ms + b, b}
    end
    remaining = math.max(0, a - held)
  else
    local used = tonumber(values[slot_of[i]] or '0')
    if used + c > a then
      retry = math.max(d, 1)
    else
      used = used + c
      writes[#writes + 1] = {3, key, c, b}
    end
    remaining = math.max(0, a - used)
    reset = d
  end
  out[#out + 1] = remaining
  out[#out + 1] = reset
  -- Report the denial a client can do least about: never, else the longest wait.
  if retry ~= 0 and out[3] ~= -1 and (retry == -1 or retry > out[3]) then
    out[1] = 0
    out[2] = i
    out[3] = retry
  end
end
if out[1] == 1 then
  for _, w in ipairs(writes) do
    if w[1] == 1 then
      redis.call('SET', w[2], string.format('%.0f', math.ceil(w[3])), 'PX', w[4])
    elseif w[1] == 2 then
      redis.call('ZADD', w[2], w[3], lease)
      redis.call('PEXPIRE', w[2], w[4])
    elseif redis.call('INCRBY', w[2], w[3]) == w[3] then
      -- A new window's counter (or one refunded to zero, already expiring): set its expiry.
      redis.call('PEXPIRE', w[2], w[4])
    end
  end
end
return out
