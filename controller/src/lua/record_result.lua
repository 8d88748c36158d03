-- Record one agent's result of a job in the job record, once.
-- KEYS[1] job:<id>
-- ARGV[1] "gid:nid", ARGV[2] the result (JSON), ARGV[3] its state, ARGV[4] ttl (s), ARGV[5] now (ms),
-- ARGV[6] its run number (0: a job that runs once), ARGV[7] '1' for a job's final result, '0' for one
-- run of a job that goes on (recurring): that job stays RUNNING.
-- The result is appended to cmds_queue_<id> (another cluster slot) by append_result.lua, after
-- this script, for 'recorded' and 'duplicate' alike: a duplicate may be the retry of a post
-- whose append a crash cut off, and the append is idempotent.
-- Returns {status, job state}: status 'recorded', 'duplicate', 'unknown_job', 'not_a_target'
-- or 'not_recurring'.
-- A final result is recorded once per (job, agent); a run's result once per (job, agent, run):
-- the agent posts runs in order, so a run not above the last one recorded is a repeat.
-- A run's result is taken only for a job that runs more than once: its command has
-- `args.recurring_period` > 0, a non-empty `args.cron`, or `args.max_time` -1 (long-running:
-- the agent restarts it, and posts a run's result when a `killall` stops it; node-agent
-- Plan::remembered). Any other run
-- result is refused ('not_recurring'): a target of a fanout job could otherwise post runs
-- that fill cmds_queue_<id>. The verdict is kept in the field `recurring` ('1'/'0'), so the
-- command is decoded once per job.
local targets_json = redis.call('HGET', KEYS[1], 'targets')
if not targets_json then return {'unknown_job', ''} end
local targets = cjson.decode(targets_json)
local is_target = false
for _, t in ipairs(targets) do if t == ARGV[1] then is_target = true end end
if not is_target then return {'not_a_target', ''} end

local function recurring()
  local known = redis.call('HGET', KEYS[1], 'recurring')
  if known then return known == '1' end
  local ok, cmd = pcall(cjson.decode, redis.call('HGET', KEYS[1], 'cmd') or '')
  local args = ok and type(cmd) == 'table' and cmd.args
  local function number(v) return type(v) == 'number' and v or 0 end
  local yes = type(args) == 'table'
    and (number(args.recurring_period) > 0 or number(args.max_time) == -1
      or (type(args.cron) == 'string' and args.cron ~= ''))
  redis.call('HSET', KEYS[1], 'recurring', yes and '1' or '0')
  return yes
end

if ARGV[7] == '0' then
  local state = redis.call('HGET', KEYS[1], 'state') or ''
  if not recurring() then return {'not_recurring', state} end
  local run_field = 'run:' .. ARGV[1]
  local last = tonumber(redis.call('HGET', KEYS[1], run_field) or '0')
  if tonumber(ARGV[6]) <= last or redis.call('HEXISTS', KEYS[1], 'result:' .. ARGV[1]) == 1 then
    return {'duplicate', state}
  end
  redis.call('HSET', KEYS[1], run_field, ARGV[6])
  -- The run's result may overtake the delivery's mark, which sets `started`.
  redis.call('HSETNX', KEYS[1], 'started', ARGV[5])
  -- A job that keeps running outlives the result TTL counted from its creation.
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  if state ~= 'RUNNING' then
    -- Delivered and not yet marked (the run's result overtook the delivery's mark).
    redis.call('HSET', KEYS[1], 'state', 'RUNNING')
  end
  return {'recorded', 'RUNNING'}
end

if redis.call('HSETNX', KEYS[1], 'result:' .. ARGV[1], ARGV[2]) == 0 then
  return {'duplicate', redis.call('HGET', KEYS[1], 'state') or ''}
end
-- A job that ran longer than the TTL counted from its creation is kept as long after it ends.
redis.call('EXPIRE', KEYS[1], ARGV[4])

-- The job ends when every target answered: OK if all did OK, else the first other state.
local state, answered = 'OK', 0
for _, t in ipairs(targets) do
  local r = ARGV[3]
  if t ~= ARGV[1] then r = redis.call('HGET', KEYS[1], 'state:' .. t) end
  if r then
    answered = answered + 1
    if r ~= 'OK' and state == 'OK' then state = r end
  end
end
if answered < #targets then
  state = 'RUNNING'
  redis.call('HSET', KEYS[1], 'state:' .. ARGV[1], ARGV[3], 'state', state)
else
  redis.call('HSET', KEYS[1], 'state:' .. ARGV[1], ARGV[3], 'ended', ARGV[5], 'state', state)
end
return {'recorded', state}
