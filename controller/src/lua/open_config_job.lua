-- Open the job record of a config-file job (id cfg:<gid>:<nid>:<name>) for a result its agent
-- posts, before record_result.lua records it: the agent starts these jobs itself, so no router
-- ever created their record.
-- KEYS[1] job:<id>
-- ARGV[1] "gid:nid" (the agent, already checked to be the one the id names), ARGV[2] the
-- command (JSON, from the result's cmd and args), ARGV[3] now (ms), ARGV[4] ttl (s), ARGV[5]
-- the result's run number, ARGV[6] the result (JSON) when it is a final result, else ''
-- Returns 'stale' (a final result the record ended with before it was reopened, posted again:
-- its answer was lost; nothing changes), 'created' (no record: a first result, or the record
-- expired), 'reopened' (the
-- agent's part had ended, and this result is of a later run: the agent started the job again
-- after a `kill` or a restart; its runs stay numbered upwards), 'updated' (the command changed:
-- declared by a hello, whose command is only id, gid and nid, or the table changed), or 'open'.
if redis.call('HEXISTS', KEYS[1], 'targets') == 0 then
  local targets = cjson.encode({ARGV[1]})
  redis.call('HSET', KEYS[1], 'cmd', ARGV[2], 'state', 'RUNNING', 'created', ARGV[3],
    'started', ARGV[3], 'targets', targets, 'submitted_by', 'config', 'recurring', '1')
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 'created'
end
-- The final result that ended the agent's part before a reopen: run `final_run:<agent>` (and
-- its SHA-1 `final_sha:<agent>`). A final of an earlier run, or that same one again, is stale:
-- recording it would end the record while the job runs again.
if ARGV[6] ~= '' then
  local mark = tonumber(redis.call('HGET', KEYS[1], 'final_run:' .. ARGV[1]) or '')
  local run = tonumber(ARGV[5])
  if mark and (run < mark or (run == mark
      and redis.call('HGET', KEYS[1], 'final_sha:' .. ARGV[1]) == redis.sha1hex(ARGV[6]))) then
    return 'stale'
  end
end
local status = 'open'
-- A changed table (the agent restarted with a new definition) shows in the record.
if redis.call('HGET', KEYS[1], 'cmd') ~= ARGV[2] then
  redis.call('HSET', KEYS[1], 'cmd', ARGV[2])
  status = 'updated'
end
local last = redis.call('HGET', KEYS[1], 'result:' .. ARGV[1])
if not last then return status end
local ok, r = pcall(cjson.decode, last)
local last_run = (ok and type(r) == 'table' and tonumber(r.run)) or 0
if tonumber(ARGV[5]) <= last_run then return status end
redis.call('HDEL', KEYS[1], 'result:' .. ARGV[1], 'state:' .. ARGV[1], 'ended')
redis.call('HSET', KEYS[1], 'final_run:' .. ARGV[1], tostring(last_run),
  'final_sha:' .. ARGV[1], redis.sha1hex(last))
redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'cmd', ARGV[2], 'recurring', '1')
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 'reopened'
