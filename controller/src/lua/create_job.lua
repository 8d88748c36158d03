-- Create the job record of a command, or say why not.
-- KEYS[1] job:<id>
-- ARGV[1] the raw command, ARGV[2] targets (JSON list of "gid:nid"), ARGV[3] now (ms), ARGV[4] ttl (s),
-- ARGV[5] who submitted it (the command's `submitted_by`, else "redis"), ARGV[6..] more field/value
-- pairs set at creation (a rollout's `rollout` plan and `released` count: rollout.rs)
-- Returns 1 created; 0 exists with the same command (a replay); -1 exists with another command.
local existing = redis.call('HGET', KEYS[1], 'cmd')
if existing then
  if existing == ARGV[1] then return 0 end
  return -1
end
redis.call('HSET', KEYS[1], 'cmd', ARGV[1], 'state', 'QUEUED', 'created', ARGV[3], 'targets', ARGV[2],
  'submitted_by', ARGV[5])
for i = 6, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
