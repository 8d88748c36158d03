-- End a sweeper's claim of a rollout (rollout_claim.lua): drop its lease and set when to look at
-- it next, unless a prompt (a result, a kill: score 0) moved its score off the claim's token
-- meanwhile, which stays so the next sweep looks at once; or drop it when it is done.
-- KEYS[1] {cmds_queue}:rollouts, KEYS[2] {cmds_queue}:rollouts:leases
-- ARGV[1] the job id, ARGV[2] the claim's token (its lease end, ms), ARGV[3] the next look (ms),
--   or '' when the rollout is done
-- Returns nothing.
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return
end
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '')
if score and score == tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
end
