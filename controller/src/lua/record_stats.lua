-- Record an agent's stats batches: append each to its stream, update the latest values.
-- KEYS[1] stats:{g:n} (stream), KEYS[2] stats:{g:n}:latest (hash)
-- ARGV[1] stream MAXLEN (approximate), ARGV[2] ttl (s) of both keys, ARGV[3] n = number of batches,
-- ARGV[4 .. 3+n] the batches (JSON), then pairs: metric key, its latest values (JSON).
-- Returns the number of batches appended.
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'batch', ARGV[i])
end
local first = 4 + n
-- In chunks of 500 pairs: unpack() of too many values fails.
local i = first
while i < #ARGV do
  local last = math.min(i + 999, #ARGV)
  redis.call('HSET', KEYS[2], unpack(ARGV, i, last))
  i = last + 1
end
if #ARGV > first then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
if n > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return n
