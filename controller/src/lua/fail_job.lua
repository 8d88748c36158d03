-- Answer a command that cannot run with an ERROR result, without touching another job's record.
-- KEYS[1] job:<id>, KEYS[2] cmds_queue_<id>
-- ARGV[1] raw command, ARGV[2] the ERROR result (JSON), ARGV[3] now (ms), ARGV[4] ttl (s)
-- Returns 1 when the job record was created as ERROR, 0 when a job with this id already existed,
-- -1 when this very command was answered already (a replay after a crash): nothing is written.
if redis.call('HGET', KEYS[1], 'cmd') == ARGV[1] and redis.call('HGET', KEYS[1], 'targets') == '[]' then
  return -1
end
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'cmd', ARGV[1], 'state', 'ERROR', 'created', ARGV[3], 'targets', '[]')
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  created = 1
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return created
