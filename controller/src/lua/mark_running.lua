-- A job's command was handed to an agent: QUEUED becomes RUNNING (a final state stays).
-- KEYS[1] job:<id>
-- ARGV[1] now (ms): kept as `started`, when the job was first handed to an agent.
-- Returns 1 when the state changed, else 0.
if redis.call('HGET', KEYS[1], 'state') == 'QUEUED' then
  redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'started', ARGV[1])
  return 1
end
return 0
