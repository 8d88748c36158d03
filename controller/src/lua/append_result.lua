-- Append one result to a job's result list, exactly once per mark, and bound the list.
-- KEYS[1] cmds_queue_<id>, KEYS[2] {cmds_queue_<id>}:appended (sorted set of the marks of the
--   results appended: "<gid:nid>|final" for an agent's final result, "<gid:nid>|<run>|run" for
--   one run of a recurring job, "error|<sha256>" for the answer to a command that cannot run;
--   in the slot of KEYS[1])
-- ARGV[1] the mark, ARGV[2] the result (JSON), ARGV[3] ttl (s), ARGV[4] results kept,
-- ARGV[5] marks kept (the newest by score), ARGV[6] the mark's score (now, ms), ARGV[7] '1'
-- for a job of one target whose final results come again and again (a config-file job ends
-- once per start of it): the list keeps its newest ARGV[4] results of any kind, ARGV[8] the
-- channel of job events (jsacc:events), ARGV[9] the event of this result ('' for none: it was
-- recorded before), published in the same round trip (PUBLISH names no key: still one slot)
-- Returns 1 when appended now, 0 when not: an earlier call appended it (its answer was lost),
-- or it is a refusal and the list is full.
-- job:<id> lives in another slot, so recording a result and appending it are two steps: this
-- one is idempotent, so a retry of both after a crash between them appends once.
--
-- The bound: the list keeps at most ARGV[4] results, but an agent's final result is never
-- dropped for it, so a target of a fanout job cannot push the others' final results out (the
-- client waits for one per target): a run's result that makes the list too long is followed
-- by the removal of the oldest run results (the newest one itself, when final results alone
-- fill the list). A refusal is not appended to a full list (pushing a command with a taken id
-- again and again answers each push: these answers are also in cmds_queue:dead). So the list
-- holds at most ARGV[4] results plus one final result per target.
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local max = tonumber(ARGV[4])
-- How a run's result (and only that) ends: results.rs serializes `final` last, and only when false.
local RUN_END = '"final":false}'
-- Stands for a removed item until LREM takes it out; no result (JSON) looks like it.
local TRIMMED = '\0trimmed'
-- Items looked at, from the oldest, to find run results to remove.
local WALK, PAGE = 1000, 100

local function is_run(item)
  return string.sub(item, -#RUN_END) == RUN_END
end

local function remove_oldest_runs()
  local n = redis.call('LLEN', KEYS[1])
  local excess, removed, i = n - max, 0, 0
  local stop = math.min(n, WALK)
  while removed < excess and i < stop do
    local page = redis.call('LRANGE', KEYS[1], i, math.min(i + PAGE, stop) - 1)
    for j, item in ipairs(page) do
      if removed < excess and is_run(item) then
        redis.call('LSET', KEYS[1], i + j - 1, TRIMMED)
        removed = removed + 1
      end
    end
    i = i + #page
  end
  if removed > 0 then redis.call('LREM', KEYS[1], removed, TRIMMED) end
end

local appended = 1
if string.sub(ARGV[1], 1, 6) == 'error|' and redis.call('LLEN', KEYS[1]) >= max then
  appended = 0
else
  redis.call('RPUSH', KEYS[1], ARGV[2])
  if ARGV[7] == '1' then
    redis.call('LTRIM', KEYS[1], -max, -1)
  elseif string.sub(ARGV[1], -4) == '|run' then
    remove_oldest_runs()
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -1 - tonumber(ARGV[5]))
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[9]) end
return appended
