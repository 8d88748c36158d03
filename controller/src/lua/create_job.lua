-- Create the job record of a command, or say why not.
-- KEYS[1] job:<id>
-- ARGV[1] the command as the record keeps it (router/kept.rs: the raw text, or without a big
-- `data`), ARGV[2] targets (JSON list of "gid:nid"), ARGV[3] now (ms), ARGV[4] ttl (s),
-- ARGV[5] who submitted it (the command's `submitted_by`, else "redis"), ARGV[6] the SHA-256 of
-- the raw text when ARGV[1] is not the raw text, else '', ARGV[7..] more field/value pairs set at
-- creation (a rollout's `rollout` plan and `released` count: rollout.rs; `data_omitted`)
-- Returns 1 created; 0 exists with the same command (a replay); -1 exists with another command.
-- The same command: the same digest when the record has one, else the same text.
local existing = redis.call('HGET', KEYS[1], 'cmd')
if existing then
  local digest = redis.call('HGET', KEYS[1], 'digest')
  if digest then
    if digest == ARGV[6] then return 0 end
    return -1
  end
  if ARGV[6] == '' and existing == ARGV[1] then return 0 end
  return -1
end
redis.call('HSET', KEYS[1], 'cmd', ARGV[1], 'state', 'QUEUED', 'created', ARGV[3], 'targets', ARGV[2],
  'submitted_by', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'digest', ARGV[6]) end
for i = 7, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
