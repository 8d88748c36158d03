-- Mark a batch of a rollout released, once: a compare-and-set on the released count, so of
-- several sweepers that pushed the same batch (harmless: an agent drops a job id it has seen)
-- one marks it.
-- KEYS[1] job:<id>
-- ARGV[1] the released count the batch was pushed from, ARGV[2] the count after it
-- Returns 1 marked; 0 another sweeper marked it (the count moved); -1 the rollout was stopped
-- meanwhile (a kill), and the batch is not marked: `releasing` stays, so the next step kills
-- the job on the batch (rollout_step.lua's 'unrelease').
if redis.call('HEXISTS', KEYS[1], 'stopped') == 1 then return -1 end
if (redis.call('HGET', KEYS[1], 'released') or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'released', ARGV[2])
redis.call('HDEL', KEYS[1], 'batch_done', 'releasing')
return 1
