-- Settles requests at their end: corrects token reservations by the difference between what was
-- reserved and what was used (negative refunds), and releases concurrency leases. The gateway
-- sends many requests' settlements in one call, corrections of one counter already summed.
-- KEYS[i] is the counter of item i (one hash tag: one slot).
-- ARGV[1] = number of items, then five integers per item (as in admit.lua):
--   kind 1, rate (GCRA):   limit per period, period ms, 0, delta units
--   kind 2, concurrency:   0, 0, lease id, 0 (release the lease)
--   kind 3, window budget: 0, key ttl ms, 0, delta units
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
for i = 1, n do
  local at = 1 + (i - 1) * 5
  local kind = tonumber(ARGV[at + 1])
  local a = tonumber(ARGV[at + 2])
  local b = tonumber(ARGV[at + 3])
  local delta = tonumber(ARGV[at + 5])
  local key = KEYS[i]
  if kind == 1 and delta ~= 0 then
    local interval = b * 1000 / a
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now_us then tat = now_us end
    local new_tat = tat + delta * interval
    -- A refund never makes a bucket fuller than full.
    if new_tat <= now_us then
      redis.call('DEL', key)
    else
      redis.call('SET', key, string.format('%.0f', math.ceil(new_tat)), 'PX',
        math.ceil((new_tat - now_us) / 1000) + 1000)
    end
  elseif kind == 2 then
    redis.call('ZREM', key, ARGV[at + 4])
  elseif kind == 3 and delta ~= 0 then
    -- The window may have ended meanwhile: its counter is gone and nothing is owed to it.
    if delta > 0 or redis.call('EXISTS', key) == 1 then
      local used = redis.call('INCRBY', key, delta)
      if used < 0 then
        redis.call('SET', key, 0, 'KEEPTTL')
      elseif used == delta then
        redis.call('PEXPIRE', key, b)
      end
    end
  end
end
return 1
