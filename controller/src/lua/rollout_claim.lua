-- Claim the rollouts due now for one sweeper (rollout.rs), so that one instance drives a given
-- rollout at a time: a due member (score <= now) that no live lease holds is leased until
-- now + lease and its score moved to that same time (the claim's token: rollout_unclaim.lua
-- sets the next look only if no prompt moved it meanwhile). A lease whose holder died ends.
-- KEYS[1] {cmds_queue}:rollouts, KEYS[2] {cmds_queue}:rollouts:leases
-- ARGV[1] now (ms), ARGV[2] the lease (ms), ARGV[3] at most this many
-- Returns the job ids claimed.
local now, lease_end = tonumber(ARGV[1]), tonumber(ARGV[1]) + tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = {}
for _, id in ipairs(due) do
  local held = tonumber(redis.call('ZSCORE', KEYS[2], id) or '')
  if not held or held <= now then
    redis.call('ZADD', KEYS[1], 'XX', lease_end, id)
    redis.call('ZADD', KEYS[2], lease_end, id)
    claimed[#claimed + 1] = id
  end
end
return claimed
