-- Append one result to a job's result list, exactly once per mark.
-- KEYS[1] cmds_queue_<id>, KEYS[2] {cmds_queue_<id>}:appended (sorted set of the marks of the
--   results appended: "<gid:nid>|final" for an agent's final result, "<gid:nid>|<run>|run" for
--   one run of a recurring job, "error|<sha256>" for the
--   answer to a command that cannot run; in the slot of KEYS[1])
-- ARGV[1] the mark, ARGV[2] the result (JSON), ARGV[3] ttl (s), ARGV[4] results kept,
-- ARGV[5] marks kept (the newest by score), ARGV[6] the mark's score (now, ms)
-- Returns 1 when appended now, 0 when an earlier call appended it (its answer was lost).
-- job:<id> lives in another slot, so recording a result and appending it are two steps: this
-- one is idempotent, so a retry of both after a crash between them appends once.
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -1 - tonumber(ARGV[5]))
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
