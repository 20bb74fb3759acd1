-- Switchboard: admit one request against all of its limits and quotas at once.
-- Every key of a request is under one hash tag (its org), so this runs on one
-- shard of a Redis Cluster. Nothing is taken unless everything passes.
--
-- KEYS: nb GCRA buckets (request limits, then token limits), then nq quota hashes.
-- ARGV[1] = nb, ARGV[2] = nq,
--   then per bucket: interval (microseconds per unit), cost (units);
--   then per quota: max_nanos (-1: none), max_tokens (-1: none), hold_tokens, hold_nanos, expire_at (unix s;
--   unused here: the seed set it).
-- Returns {code, index, wait_us, rem_1, reset_us_1, ..., rem_nb, reset_us_nb}
--   code 0 admitted; 1 bucket `index` refused (wait_us until it would fit);
--   2 quota `index` spend cap reached; 3 quota `index` token cap reached;
--   4 quota `index` not seeded yet (the admin has not loaded its usage).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = 60000000
local nb = tonumber(ARGV[1])
local nq = tonumber(ARGV[2])

local tats = {}
local news = {}
local refused = 0
local wait = 0
for i = 1, nb do
  local interval = tonumber(ARGV[1 + 2 * i])
  local cost = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  tats[i] = tat
  local new = tat + cost * interval
  news[i] = new
  -- Half a microsecond of slack for the rounding of non-integral intervals.
  if refused == 0 and new - now > window + 0.5 then
    refused = i
    wait = new - now - window
  end
end

local function report(code, index, w, use_new)
  local out = {code, index, math.floor(w)}
  for i = 1, nb do
    local interval = tonumber(ARGV[1 + 2 * i])
    local tat = tats[i]
    if use_new then tat = news[i] end
    local rem = math.floor((now + window - tat) / interval + 0.000001)
    if rem < 0 then rem = 0 end
    out[#out + 1] = rem
    out[#out + 1] = math.floor(tat - now)
  end
  return out
end

if refused > 0 then
  return report(1, refused, wait, false)
end

local base = 2 + 2 * nb
for j = 1, nq do
  local o = base + (j - 1) * 5
  local k = KEYS[nb + j]
  local v = redis.call('HMGET', k, 'un', 'ut', 'hn', 'ht', 's')
  if not v[5] then
    return report(4, j, 0, false)
  end
  local max_n = tonumber(ARGV[o + 1])
  local max_t = tonumber(ARGV[o + 2])
  local spent = (tonumber(v[1]) or 0) + (tonumber(v[3]) or 0)
  if max_n >= 0 and spent >= max_n then
    return report(2, j, 0, false)
  end
  local used = (tonumber(v[2]) or 0) + (tonumber(v[4]) or 0)
  if max_t >= 0 and used >= max_t then
    return report(3, j, 0, false)
  end
end

for i = 1, nb do
  redis.call('SET', KEYS[i], string.format('%.17g', news[i]), 'PX', math.floor((news[i] - now) / 1000) + 1000)
end
for j = 1, nq do
  local o = base + (j - 1) * 5
  local k = KEYS[nb + j]
  redis.call('HINCRBY', k, 'ht', ARGV[o + 3])
  redis.call('HINCRBY', k, 'hn', ARGV[o + 4])
  -- No EXPIREAT here: a seeded counter has its expiry already (seed.lua).
end
return report(0, 0, 0, true)
