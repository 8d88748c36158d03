-- Jobs' commands were handed to an agent: QUEUED becomes RUNNING (a final state stays), and
-- each change is published.
-- KEYS[1..n] job:<id> (one key on a Redis Cluster, where they are in different slots; a whole
--   poll's on one server)
-- ARGV[1] now (ms): kept as `started`, when the job was first handed to an agent.
-- ARGV[2] the channel of job events (jsacc:events), ARGV[2 + i] the RUNNING event of KEYS[i]
-- Returns how many changed.
-- The events are published here, in the same round trip as the changes (PUBLISH names no key).
local changed = 0
for i, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'state') == 'QUEUED' then
    redis.call('HSET', key, 'state', 'RUNNING', 'started', ARGV[1])
    redis.call('PUBLISH', ARGV[2], ARGV[2 + i])
    changed = changed + 1
  end
end
return changed
