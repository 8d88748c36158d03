-- Record part of an agent's stats post: append batches to its stream once each, and write
-- latest values, at most ARGV[5] metric names in all. The caller sends at most a few hundred
-- of either per call, so no call runs long (stats.rs explains the order of the calls).
-- KEYS[1] stats:{g:n} (stream), KEYS[2] stats:{g:n}:latest (hash: metric key -> values JSON),
--   KEYS[3] stats:{g:n}:seen (sorted set: SHA-256 of each batch appended lately -> its epoch;
--   the newest ARGV[4] are kept)
-- ARGV[1] stream MAXLEN (approximate), ARGV[2] ttl (s) of the keys, refreshed by each write,
-- ARGV[3] n = number of batches, ARGV[4] how many batch hashes to remember, ARGV[5] most
-- fields of KEYS[2], ARGV[6 .. 5+3n] triples: a batch (JSON), its epoch, its hash; then pairs:
-- metric key, its latest values (JSON).
-- A batch whose hash is remembered was appended by an earlier post whose answer the agent did
-- not get: it is not appended again (an agent's batches differ at least in epoch or metrics).
-- A metric key not yet in KEYS[2] while it holds ARGV[5] fields is not written (dropped).
-- Returns {batches appended, metric keys dropped}.
local n, ttl = tonumber(ARGV[3]), ARGV[2]
local added = 0
for i = 6, 5 + 3 * n, 3 do
  if not redis.call('ZSCORE', KEYS[3], ARGV[i + 2]) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'batch', ARGV[i])
    redis.call('ZADD', KEYS[3], ARGV[i + 1], ARGV[i + 2])
    added = added + 1
  end
end
if added > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1 - tonumber(ARGV[4]))
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end

local first, cap, dropped = 6 + 3 * n, tonumber(ARGV[5]), 0
if #ARGV < first then return {added, dropped} end
local size = redis.call('HLEN', KEYS[2])
if size + (#ARGV - first + 1) / 2 <= cap then
  -- Room for every key: one HSET (in parts: unpack() of too many values fails).
  local i = first
  while i < #ARGV do
    local last = math.min(i + 999, #ARGV)
    redis.call('HSET', KEYS[2], unpack(ARGV, i, last))
    i = last + 1
  end
else
  for i = first, #ARGV, 2 do
    if size < cap or redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then
      size = size + redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    else
      dropped = dropped + 1
    end
  end
end
redis.call('EXPIRE', KEYS[2], ttl)
return {added, dropped}
