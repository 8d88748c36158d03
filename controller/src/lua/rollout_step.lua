-- Decide what a rollout (a fanout released in batches, rollout.rs) needs now. Decides only: the
-- caller acts (pushes a batch, or ends the targets not released) and then marks what it did,
-- so a crash between deciding and acting loses nothing: the next sweep decides the same.
-- KEYS[1] job:<id> (fields `rollout` {"batch","batch_wait","max_failures"}, `targets`, `released`:
--   how many of the sorted targets were pushed, `batch_done`: when the sweep saw every released
--   target answer (ms), `failed`: results of released targets that are not OK, `stopped`: why
--   the rest of the targets end, `stop_state`: the state they end in, `releasing`: the count
--   after the batch being pushed, set here before the push and cleared by rollout_mark.lua)
-- ARGV[1] now (ms), ARGV[2] when to look again while a batch runs (ms from now; a result
--   brings the look forward: results.rs), ARGV[3] the result TTL (s): each step renews the
--   record, so a slow rollout (long batches, a long batch_wait) outlives its last write
-- Returns {'done'} nothing more to do; {'wait', at} look again at `at` (ms);
-- {'release', from, to} push targets from+1..to (1-based), then rollout_mark.lua;
-- {'unrelease', released, releasing} the rollout was stopped while a batch was being pushed
-- (its mark never came): kill the job on targets released+1..releasing, then clear
-- `releasing`; {'stop', released, reason, state} end every target after the first `released`
-- with `state` and `reason` (the same reply until each has a result).
local f = redis.call('HMGET', KEYS[1], 'rollout', 'targets', 'released', 'batch_done', 'stopped',
  'stop_state', 'releasing')
if not f[1] or not f[2] then return {'done'} end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local ok, plan = pcall(cjson.decode, f[1])
local ok2, targets = pcall(cjson.decode, f[2])
if not ok or not ok2 or type(plan) ~= 'table' or type(targets) ~= 'table' then return {'done'} end
local released = tonumber(f[3] or '0') or 0
local now = tonumber(ARGV[1])

if f[5] then
  if f[7] and (tonumber(f[7]) or 0) > released then
    return {'unrelease', released, tonumber(f[7])}
  end
  for i = released + 1, #targets do
    if not redis.call('HGET', KEYS[1], 'state:' .. targets[i]) then
      return {'stop', released, f[5], f[6] or 'ERROR'}
    end
  end
  return {'done'}
end
if released >= #targets then return {'done'} end

local answered, failed = 0, 0
for i = 1, released do
  local r = redis.call('HGET', KEYS[1], 'state:' .. targets[i])
  if r then
    answered = answered + 1
    if r ~= 'OK' then failed = failed + 1 end
  end
end
redis.call('HSET', KEYS[1], 'failed', failed)
if answered < released then return {'wait', now + tonumber(ARGV[2])} end

-- Every released target answered: the failures are final until the next release.
local max = plan.max_failures
if type(max) == 'number' and failed > max then
  local reason = string.format('rollout stopped: %d of %d failed (max_failures %d)', failed, released, max)
  redis.call('HSET', KEYS[1], 'stopped', reason, 'stop_state', 'ERROR')
  return {'stop', released, reason, 'ERROR'}
end
local done_at = tonumber(f[4] or '')
if not done_at then
  done_at = now
  redis.call('HSET', KEYS[1], 'batch_done', now)
end
local due = done_at + (tonumber(plan.batch_wait) or 0) * 1000
if now < due then return {'wait', due} end
local to = math.min(released + (tonumber(plan.batch) or 1), #targets)
redis.call('HSET', KEYS[1], 'releasing', to)
return {'release', released, to}
