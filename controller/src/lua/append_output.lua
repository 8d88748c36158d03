-- Append one output batch of an agent to a job's live output, once, within the job's caps.
-- KEYS[1] output:<id> (stream), KEYS[2] {output:<id>}:seq (hash in the stream's slot: field
--   "gid:nid" -> the last batch seq appended for that agent; "n" -> lines kept; "bytes" ->
--   their bytes; "capped" -> 1 once the cap marker was appended)
-- ARGV[1] "gid:nid", ARGV[2] the batch's seq, ARGV[3] the cap in lines, ARGV[4] the cap in
--   bytes, ARGV[5] ttl (s), ARGV[6] now (ms), ARGV[7] the marker's text; then 4 values per
--   line: fd, level, line, time
-- Returns {appended, capped, duplicate, stop}: lines appended, lines over a cap (not kept),
-- 1 when the batch was appended by an earlier post (the agent did not get that answer), and 1
-- when the stream takes no more lines (the agent stops forwarding the job).
local seq = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if seq <= last then
  return {0, 0, 1, redis.call('HEXISTS', KEYS[2], 'capped')}
end
local lines = (#ARGV - 7) / 4
if redis.call('HEXISTS', KEYS[2], 'capped') == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return {0, lines, 0, 1}
end
local max_lines, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0')
local appended, capped = 0, 0
for i = 8, #ARGV, 4 do
  local size = #ARGV[i + 2]
  if capped == 0 and n < max_lines and bytes + size <= max_bytes then
    redis.call('XADD', KEYS[1], '*', 'agent', ARGV[1], 'fd', ARGV[i], 'level', ARGV[i + 1],
      'line', ARGV[i + 2], 'time', ARGV[i + 3])
    n, bytes, appended = n + 1, bytes + size, appended + 1
  else
    -- The first line over a cap ends the stream: later, shorter lines are not kept either.
    capped = capped + 1
  end
end
local stop = 0
if capped > 0 then
  -- Once per job: where its stream stops, and why.
  redis.call('HSET', KEYS[2], 'capped', '1')
  redis.call('XADD', KEYS[1], '*', 'agent', ARGV[1], 'fd', '2', 'level', '0',
    'line', ARGV[7], 'time', ARGV[6])
  stop = 1
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2], 'n', n, 'bytes', bytes)
-- Both expire with the job (`--result-ttl` after the last line).
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {appended, capped, 0, stop}
