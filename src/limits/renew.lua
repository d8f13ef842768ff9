-- Keeps this replica's live concurrency leases from expiring (a crashed replica's do expire).
-- KEYS[1] = the lease set; ARGV[1] = lease ttl ms; ARGV[2..] = lease ids.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now_ms + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
