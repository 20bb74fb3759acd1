-- Switchboard: reconcile one request that ended (token reservations against
-- what it used; quota holds into usage). Only ever returns or charges what
-- the request itself took; never refused.
--
-- KEYS: nb token buckets, then nq quota hashes.
-- ARGV[1] = nb, ARGV[2] = nq,
--   then per bucket: interval (us per token), delta (used - reserved tokens; may be negative);
--   then per quota: reserved_tokens, held_nanos, used_tokens, used_nanos, expire_at.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nb = tonumber(ARGV[1])
local nq = tonumber(ARGV[2])
for i = 1, nb do
  local interval = tonumber(ARGV[1 + 2 * i])
  local delta = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  local new
  if delta >= 0 then
    if tat < now then tat = now end
    new = tat + delta * interval
  else
    new = tat + delta * interval
  end
  if new > now then
    redis.call('SET', KEYS[i], string.format('%.17g', new), 'PX', math.floor((new - now) / 1000) + 1000)
  elseif tat > 0 then
    redis.call('DEL', KEYS[i])
  end
end
local base = 2 + 2 * nb
for j = 1, nq do
  local o = base + (j - 1) * 5
  local k = KEYS[nb + j]
  local ht = redis.call('HINCRBY', k, 'ht', -tonumber(ARGV[o + 1]))
  if ht < 0 then redis.call('HSET', k, 'ht', 0) end
  local hn = redis.call('HINCRBY', k, 'hn', -tonumber(ARGV[o + 2]))
  if hn < 0 then redis.call('HSET', k, 'hn', 0) end
  redis.call('HINCRBY', k, 'ut', ARGV[o + 3])
  redis.call('HINCRBY', k, 'un', ARGV[o + 4])
  redis.call('EXPIREAT', k, ARGV[o + 5])
end
return 0
