-- Record one agent's result of a job, once.
-- KEYS[1] job:<id>, KEYS[2] cmds_queue_<id>
-- ARGV[1] "gid:nid", ARGV[2] the result (JSON), ARGV[3] its state, ARGV[4] ttl (s), ARGV[5] max results kept
-- Returns {status, job state}: status 'recorded', 'duplicate', 'unknown_job' or 'not_a_target'.
local targets_json = redis.call('HGET', KEYS[1], 'targets')
if not targets_json then return {'unknown_job', ''} end
local targets = cjson.decode(targets_json)
local is_target = false
for _, t in ipairs(targets) do if t == ARGV[1] then is_target = true end end
if not is_target then return {'not_a_target', ''} end
if redis.call('HSETNX', KEYS[1], 'result:' .. ARGV[1], ARGV[2]) == 0 then
  return {'duplicate', redis.call('HGET', KEYS[1], 'state') or ''}
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[4])

-- The job ends when every target answered: OK if all did OK, else the first other state.
local state, answered = 'OK', 0
for _, t in ipairs(targets) do
  local r = redis.call('HGET', KEYS[1], 'state:' .. t)
  if t == ARGV[1] then r = ARGV[3] end
  if r then
    answered = answered + 1
    if r ~= 'OK' and state == 'OK' then state = r end
  end
end
redis.call('HSET', KEYS[1], 'state:' .. ARGV[1], ARGV[3])
if answered < #targets then state = 'RUNNING' end
redis.call('HSET', KEYS[1], 'state', state)
return {'recorded', state}
