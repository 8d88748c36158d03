-- Declare a config-file job (id cfg:<gid>:<nid>:<name>) its agent started, from the agent's
-- hello: its record exists from the start, not only from its first result (a daemon posts a
-- result only when it stops).
-- KEYS[1] job:<id>
-- ARGV[1] "gid:nid" (the agent, already checked to be the one the id names), ARGV[2] the command
-- as far as known (JSON: id, gid, nid; its first result tells the rest), ARGV[3] now (ms),
-- ARGV[4] ttl (s), ARGV[5] the agent's start (its hello's `started`, ms)
-- Returns 'created' (no record), 'reopened' (the agent's part had ended before this start of
-- the agent: the agent started the job again), or 'open'. A hello the agent sends again after a
-- reconnect (the same start) changes nothing; the record's TTL is renewed with every hello.
-- A reopen keeps the run of the final result it clears in `final_run:<agent>` (and its SHA-1 in
-- `final_sha:<agent>`): that result posted again (its answer lost) is stale, not a new end
-- (open_config_job.lua).
if redis.call('HEXISTS', KEYS[1], 'targets') == 0 then
  redis.call('HSET', KEYS[1], 'cmd', ARGV[2], 'state', 'RUNNING', 'created', ARGV[3],
    'started', ARGV[3], 'targets', cjson.encode({ARGV[1]}), 'submitted_by', 'config',
    'recurring', '1', 'incarnation', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 'created'
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
local known = redis.call('HGET', KEYS[1], 'incarnation')
redis.call('HSET', KEYS[1], 'incarnation', ARGV[5])
-- No start known (its first result opened the record before this hello arrived): this start.
if not known or known == ARGV[5] then return 'open' end
local last = redis.call('HGET', KEYS[1], 'result:' .. ARGV[1])
if not last then return 'open' end
local ok, r = pcall(cjson.decode, last)
local last_run = (ok and type(r) == 'table' and tonumber(r.run)) or 0
redis.call('HDEL', KEYS[1], 'result:' .. ARGV[1], 'state:' .. ARGV[1], 'ended')
redis.call('HSET', KEYS[1], 'final_run:' .. ARGV[1], tostring(last_run),
  'final_sha:' .. ARGV[1], redis.sha1hex(last))
redis.call('HSET', KEYS[1], 'state', 'RUNNING')
return 'reopened'
