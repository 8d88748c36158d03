-- A job's command was handed to an agent: QUEUED becomes RUNNING (a final state stays), and
-- the change is published.
-- KEYS[1] job:<id>
-- ARGV[1] now (ms): kept as `started`, when the job was first handed to an agent.
-- ARGV[2] the channel of job events (jsacc:events), ARGV[3] the RUNNING event (JSON)
-- Returns 1 when the state changed, else 0.
-- The event is published here, in the same round trip as the change (PUBLISH names no key, so
-- this stays a one-slot script on a Redis Cluster).
if redis.call('HGET', KEYS[1], 'state') == 'QUEUED' then
  redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'started', ARGV[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
