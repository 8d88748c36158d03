-- Take a command that waited too long for its agent out of the agent's queue.
-- KEYS[1] agent:{g:n}:queue
-- ARGV[1] the raw command
-- Returns 1 when it was still waiting (the caller then answers ERROR), 0 when it was delivered.
return redis.call('LREM', KEYS[1], 1, ARGV[1])
