-- Admits a batch of requests, in order, each against every limit that applies to it, all or
-- nothing per request, on Valkey's clock. Requests that arrive while a call is in flight for the
-- same hash tag are sent together: counters are read once, decided on in memory request by
-- request exactly as one call per request would, and written once per counter.
-- An admitted request may also take an allowance for its replica: `want` more units (or lease
-- slots) of a counter, granted only while at least `keep` units would remain for everyone else,
-- so near a limit every admission is decided here, one by one.
-- KEYS are the distinct counters of the batch; all share one hash tag, so one slot in a cluster.
-- ARGV[1] = number of requests, then per request: number of checks n, lease id, then nine
-- integers per check: the index of its counter in KEYS,
--   kind 1, rate (GCRA):   limit per period, period ms, capacity (units), cost (units)
--   kind 2, concurrency:   max leases, lease ttl ms, 0, 0
--   kind 3, window budget: budget, key ttl ms, cost, ms until the window ends
-- then covered (1: the replica's allowance already pays this check: it is not charged and does
-- not refuse), want, keep. Granted lease slots are named lease id + 1, + 2, ...
-- Returns per request: admitted, denied check (1-based, 0 = none), retry after ms (-1 = never),
-- then per check: remaining after this request and its grant (before it, when denied), reset
-- ms, units (or slots) granted.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)

-- Parse the batch; note each counter's kind.
local requests = {}
local kind_of = {}
local at = 2
for r = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[at])
  local request = { lease = ARGV[at + 1], checks = {} }
  at = at + 2
  for i = 1, n do
    local check = {
      key = KEYS[tonumber(ARGV[at])],
      kind = tonumber(ARGV[at + 1]),
      a = tonumber(ARGV[at + 2]),
      b = tonumber(ARGV[at + 3]),
      c = tonumber(ARGV[at + 4]),
      d = tonumber(ARGV[at + 5]),
      covered = tonumber(ARGV[at + 6]) == 1,
      want = tonumber(ARGV[at + 7]),
      keep = tonumber(ARGV[at + 8]),
    }
    request.checks[i] = check
    kind_of[check.key] = check.kind
    at = at + 9
  end
  requests[r] = request
end

-- Read every counter once: rates and budgets in one MGET, lease sets pruned and counted.
local value = {}
local string_keys = {}
for key, kind in pairs(kind_of) do
  if kind == 2 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
    value[key] = redis.call('ZCARD', key)
  else
    string_keys[#string_keys + 1] = key
  end
end
if #string_keys > 0 then
  local values = redis.call('MGET', (table.unpack or unpack)(string_keys))
  for i, key in ipairs(string_keys) do
    if kind_of[key] == 1 then
      value[key] = tonumber(values[i] or now_us)
    else
      value[key] = tonumber(values[i] or '0')
    end
  end
end

-- Decide request by request, updating the in-memory counters of each admitted one.
local out = {}
local rate_ttl, added, leases, lease_ttl = {}, {}, {}, {}
for _, request in ipairs(requests) do
  local head = #out
  out[head + 1], out[head + 2], out[head + 3] = 1, 0, 0
  local next_value = {}
  for i, ch in ipairs(request.checks) do
    local remaining, reset, retry = 0, 0, 0
    local key = ch.key
    if ch.covered then
      -- Paid from the replica's allowance: only its level is reported.
      local v = value[key]
      if ch.kind == 1 then
        local interval = ch.b * 1000 / ch.a
        local tat = math.max(v, now_us)
        remaining = math.max(0, math.floor((ch.c * interval - (tat - now_us)) / interval))
        reset = math.ceil((tat - now_us) / 1000)
      elseif ch.kind == 2 then
        remaining = math.max(0, ch.a - v)
      else
        remaining = math.max(0, ch.a - v)
        reset = ch.d
      end
    elseif ch.kind == 1 then
      local interval = ch.b * 1000 / ch.a
      local tolerance = ch.c * interval
      local tat = value[key]
      if tat < now_us then tat = now_us end
      local new_tat = tat + ch.d * interval
      if ch.d > ch.c then
        retry = -1
      elseif new_tat - now_us > tolerance then
        retry = math.ceil((new_tat - now_us - tolerance) / 1000)
      end
      local level = tat
      if retry == 0 then
        level = new_tat
        next_value[key] = new_tat
      end
      remaining = math.max(0, math.floor((tolerance - (level - now_us)) / interval))
      reset = math.ceil((level - now_us) / 1000)
    elseif ch.kind == 2 then
      local held = value[key]
      if held >= ch.a then
        retry = 1000
      else
        held = held + 1
        next_value[key] = held
      end
      remaining = math.max(0, ch.a - held)
    else
      local used = value[key]
      if used + ch.c > ch.a then
        retry = math.max(ch.d, 1)
      else
        used = used + ch.c
        next_value[key] = used
      end
      remaining = math.max(0, ch.a - used)
      reset = ch.d
    end
    out[#out + 1] = remaining
    out[#out + 1] = reset
    out[#out + 1] = 0
    -- Report the denial a client can do least about: never, else the longest wait.
    if retry ~= 0 and out[head + 3] ~= -1 and (retry == -1 or retry > out[head + 3]) then
      out[head + 1] = 0
      out[head + 2] = i
      out[head + 3] = retry
    end
  end
  if out[head + 1] == 1 then
    for _, ch in ipairs(request.checks) do
      local key = ch.key
      if ch.covered then
        -- Nothing charged.
      elseif ch.kind == 1 then
        value[key] = next_value[key]
        rate_ttl[key] = math.ceil((value[key] - now_us) / 1000) + 1000
      elseif ch.kind == 2 then
        value[key] = next_value[key]
        leases[key] = leases[key] or {}
        local list = leases[key]
        list[#list + 1] = now_ms + ch.b
        list[#list + 1] = request.lease
        lease_ttl[key] = math.max(lease_ttl[key] or 0, ch.b)
      else
        value[key] = next_value[key]
        added[key] = (added[key] or 0) + ch.c
        lease_ttl[key] = ch.b
      end
    end
    -- Allowances: taken only while `keep` units would remain after them.
    for i, ch in ipairs(request.checks) do
      local key = ch.key
      local at_out = head + 3 + (i - 1) * 3
      if ch.want > 0 then
        local granted = 0
        if ch.kind == 1 then
          local interval = ch.b * 1000 / ch.a
          local tat = math.max(value[key], now_us)
          local left = math.floor((ch.c * interval - (tat - now_us)) / interval)
          if left - ch.want >= ch.keep then
            granted = ch.want
            value[key] = tat + granted * interval
            rate_ttl[key] = math.ceil((value[key] - now_us) / 1000) + 1000
            out[at_out + 2] = math.ceil((value[key] - now_us) / 1000)
          end
        elseif ch.kind == 2 then
          if ch.a - value[key] - ch.want >= ch.keep then
            granted = ch.want
            value[key] = value[key] + granted
            leases[key] = leases[key] or {}
            local list = leases[key]
            local base = tonumber(request.lease)
            for j = 1, granted do
              list[#list + 1] = now_ms + ch.b
              list[#list + 1] = string.format('%.0f', base + j)
            end
            lease_ttl[key] = math.max(lease_ttl[key] or 0, ch.b)
          end
        else
          if ch.a - value[key] - ch.want >= ch.keep then
            granted = ch.want
            value[key] = value[key] + granted
            added[key] = (added[key] or 0) + granted
            lease_ttl[key] = ch.b
          end
        end
        out[at_out + 1] = math.max(0, out[at_out + 1] - granted)
        out[at_out + 3] = granted
      end
    end
  end
end

-- Write each changed counter once.
for key, ttl in pairs(rate_ttl) do
  redis.call('SET', key, string.format('%.0f', math.ceil(value[key])), 'PX', ttl)
end
for key, list in pairs(leases) do
  redis.call('ZADD', key, (table.unpack or unpack)(list))
  redis.call('PEXPIRE', key, lease_ttl[key])
end
for key, units in pairs(added) do
  if redis.call('INCRBY', key, units) == units then
    -- A new window's counter (or one refunded to zero, already expiring): set its expiry.
    redis.call('PEXPIRE', key, lease_ttl[key])
  end
end
return out
