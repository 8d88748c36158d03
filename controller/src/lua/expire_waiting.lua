-- Decide the fate of a command whose max_wait ran out: still waiting in its agent's queue (it
-- will never be delivered: its job is to end ERROR), or handed to the agent already.
-- KEYS[1] agent:{g:n}:queue, KEYS[2] agent:{g:n}:expired, KEYS[3] agent:{g:n}:taken,
-- KEYS[4] agent:{g:n}:popped (see poll.lua for the three)
-- ARGV[1] the job id, ARGV[2] now (ms), ARGV[3] how long (ms) past its deadline a mark of
--   `taken` is kept (the job record's lifetime: a sweep later than that finds no job to end),
--   ARGV[4] the command as queued
-- Returns 1 when the command will never be delivered (the caller answers ERROR), 0 when it was
-- delivered. The same however often, and by however many controller instances at once, it is
-- asked (a sweep that failed is done again): no verdict's trace is removed by the sweep.
--
-- O(log n) whatever the queue's length, where an LREM scanned all of it: the command is not
-- searched for. poll.lua marks every command with a max_wait it hands out in `taken`, so one
-- without a mark is still in the queue (or never was). If it is at the consuming end, where
-- the oldest commands wait (the usual case for an offline agent), it is taken out now; any
-- copy further in (a routing replay may queue two) gets a tombstone in `expired`, which
-- poll.lua honours by dropping it when its turn comes.

-- Marks of commands whose deadline (at most their score) is long past.
local horizon = tonumber(ARGV[2]) - tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. horizon)
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 1 end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end

local popped = tonumber(redis.call('GET', KEYS[4]) or '0')
local start = popped
-- (LRANGE, not LINDEX: the commands deploy/redis/users.acl grants jsacc.)
while redis.call('LRANGE', KEYS[1], -1, -1)[1] == ARGV[4] do
  redis.call('RPOP', KEYS[1])
  popped = popped + 1
end
local waiting = redis.call('LLEN', KEYS[1])
if waiting == 0 then
  -- Nothing waits: no tombstone is needed, and the count starts again (as in poll.lua).
  redis.call('DEL', KEYS[2], KEYS[4])
  return 1
end
if popped ~= start then
  redis.call('SET', KEYS[4], popped)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', popped)
end
-- Every command in the queue now is gone once the consuming end has moved past them all.
redis.call('ZADD', KEYS[2], popped + waiting, ARGV[1])
return 1
