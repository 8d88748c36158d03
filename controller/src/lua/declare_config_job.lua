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
if redis.call('HEXISTS', KEYS[1], 'result:' .. ARGV[1]) == 0 then return 'open' end
redis.call('HDEL', KEYS[1], 'result:' .. ARGV[1], 'state:' .. ARGV[1], 'ended')
redis.call('HSET', KEYS[1], 'state', 'RUNNING')
return 'reopened'
