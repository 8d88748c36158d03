-- Record a command that cannot run as an ERROR job, without touching another job's record.
-- KEYS[1] job:<id>
-- ARGV[1] raw command, ARGV[2] now (ms), ARGV[3] ttl (s), ARGV[4] who submitted it
-- Returns 1 when the job record was created as ERROR, 0 when a job with this id already
-- existed (this very command answered before a crash, or another job with the id).
-- The ERROR result itself is appended by append_result.lua (cmds_queue_<id> is in another slot).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'cmd', ARGV[1], 'state', 'ERROR', 'created', ARGV[2], 'targets', '[]',
  'ended', ARGV[2], 'submitted_by', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
