-- Stop a rollout (a kill): the targets not released yet are to end with a state and reason.
-- KEYS[1] job:<id>
-- ARGV[1] the reason, ARGV[2] the state the targets not released end in
-- Returns 1 when the job is a rollout with targets not released yet and is stopped now, 0
-- otherwise (not a rollout, every target released, or stopped already: the first reason stays).
local f = redis.call('HMGET', KEYS[1], 'rollout', 'targets', 'released', 'stopped')
if not f[1] or not f[2] or f[4] then return 0 end
local ok, targets = pcall(cjson.decode, f[2])
if not ok or type(targets) ~= 'table' then return 0 end
if (tonumber(f[3] or '0') or 0) >= #targets then return 0 end
redis.call('HSET', KEYS[1], 'stopped', ARGV[1], 'stop_state', ARGV[2])
return 1
