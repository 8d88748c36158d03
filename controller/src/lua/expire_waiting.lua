-- Take a command that waited too long for its agent out of the agent's queue.
-- KEYS[1] agent:{g:n}:queue
-- ARGV[1] the raw command
-- Returns how many copies were still waiting (a replay may have queued it twice; all go): the
-- caller then answers ERROR. 0 when it was delivered.
return redis.call('LREM', KEYS[1], 0, ARGV[1])
