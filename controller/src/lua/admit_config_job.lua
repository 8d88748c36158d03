-- Admit a config-file job of an agent before its record is opened or declared: an agent has at
-- most ARGV[4] config jobs at a time (its own limit of [[job]] tables), so a token cannot grow
-- Redis with records under ever new `cfg:` ids.
-- KEYS[1] agent:{<gid>:<nid>}:config_jobs (sorted set: config job id -> when last seen, ms)
-- ARGV[1] the job id, ARGV[2] now (ms), ARGV[3] ttl (s, the records' --result-ttl), ARGV[4] the
-- most config jobs kept
-- Returns 1 (admitted: known, or room for it) or 0 (too many). Ids not seen for a TTL are
-- dropped first: their records expired with them (each result and hello renews both).
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ttl * 1000))
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], ttl)
return 1
