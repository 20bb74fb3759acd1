-- Switchboard: load a quota's accounted usage (from the admin's database)
-- into a counter that does not have it yet (a new period, a new quota, or a
-- Redis that came back empty). Adds to what data planes counted meanwhile.
--
-- KEYS[1]: the quota hash. ARGV: used_nanos, used_tokens, expire_at (unix s).
-- Returns 1 when it seeded, 0 when the counter was seeded already.
if redis.call('HEXISTS', KEYS[1], 's') == 1 then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'un', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'ut', ARGV[2])
redis.call('HSET', KEYS[1], 's', 1)
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
