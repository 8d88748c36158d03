-- Record an agent's stats batches: append each to its stream once, update the latest values.
-- KEYS[1] stats:{g:n} (stream), KEYS[2] stats:{g:n}:latest (hash), KEYS[3] stats:{g:n}:seen
--   (sorted set: SHA-1 of each batch appended lately -> its epoch; the newest ARGV[4] are kept)
-- ARGV[1] stream MAXLEN (approximate), ARGV[2] ttl (s) of the keys, ARGV[3] n = number of
-- batches, ARGV[4] how many batch hashes to remember, ARGV[5 .. 4+2n] pairs: a batch (JSON),
-- its epoch; then pairs: metric key, its latest values (JSON).
-- A batch whose hash is remembered was appended by an earlier post whose answer the agent did
-- not get: it is not appended again (an agent's batches differ at least in epoch or metrics).
-- Returns the number of batches appended.
local n = tonumber(ARGV[3])
local added = 0
for i = 5, 4 + 2 * n, 2 do
  local sha = redis.sha1hex(ARGV[i])
  if not redis.call('ZSCORE', KEYS[3], sha) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'batch', ARGV[i])
    redis.call('ZADD', KEYS[3], ARGV[i + 1], sha)
    added = added + 1
  end
end
if added > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1 - tonumber(ARGV[4]))
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
local first = 5 + 2 * n
-- In chunks of 500 pairs: unpack() of too many values fails.
local i = first
while i < #ARGV do
  local last = math.min(i + 999, #ARGV)
  redis.call('HSET', KEYS[2], unpack(ARGV, i, last))
  i = last + 1
end
if #ARGV > first then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return added
