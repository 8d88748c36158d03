-- Append one output batch of an agent to a job's live output, once, within the job's cap.
-- KEYS[1] output:<id> (stream), KEYS[2] {output:<id>}:seq (hash in the stream's slot: field
--   "gid:nid" -> the last batch seq appended for that agent; field "n" -> lines kept; field
--   "capped" -> 1 once the cap marker was appended)
-- ARGV[1] "gid:nid", ARGV[2] the batch's seq, ARGV[3] the cap (lines per job), ARGV[4] ttl (s),
--   ARGV[5] now (ms), ARGV[6] the marker's text; then 4 values per line: fd, level, line, time
-- Returns {appended, capped, duplicate}: lines appended, lines over the cap (not kept), and 1
-- when the batch was appended by an earlier post (the agent did not get that answer).
local seq = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if seq <= last then return {0, 0, 1} end
local cap = tonumber(ARGV[3])
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
local appended, capped = 0, 0
for i = 7, #ARGV, 4 do
  if n < cap then
    redis.call('XADD', KEYS[1], '*', 'agent', ARGV[1], 'fd', ARGV[i], 'level', ARGV[i + 1],
      'line', ARGV[i + 2], 'time', ARGV[i + 3])
    n, appended = n + 1, appended + 1
  else
    capped = capped + 1
  end
end
if capped > 0 and redis.call('HSETNX', KEYS[2], 'capped', '1') == 1 then
  -- Once per job: where its stream stops, and why.
  redis.call('XADD', KEYS[1], '*', 'agent', ARGV[1], 'fd', '2', 'level', '0',
    'line', ARGV[6], 'time', ARGV[5])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2], 'n', n)
-- Both expire with the job (`--result-ttl` after the last line).
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {appended, capped, 0}
