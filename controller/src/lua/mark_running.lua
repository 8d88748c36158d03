-- A job's command was handed to an agent: QUEUED becomes RUNNING (a final state stays).
-- KEYS[1] job:<id>
-- Returns 1 when the state changed, else 0.
if redis.call('HGET', KEYS[1], 'state') == 'QUEUED' then
  redis.call('HSET', KEYS[1], 'state', 'RUNNING')
  return 1
end
return 0
