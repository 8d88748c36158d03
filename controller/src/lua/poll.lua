-- One long-poll step of an agent: settle acknowledgements, put back expired leases, hand out work.
-- KEYS[1] agent:{g:n}:queue, KEYS[2] agent:{g:n}:delivered, KEYS[3] agent:{g:n}:leases (zset: id →
--   deadline ms), KEYS[4] agent:{g:n}:inflight (hash: id → command), KEYS[5] agent:{g:n}:expired
--   (zset: id → the queue position past which no copy of it is left), KEYS[6] agent:{g:n}:taken
--   (zset: id → when handed out + its max_wait, ms: the commands with a max_wait handed out),
--   KEYS[7] agent:{g:n}:popped (the position of the queue's consuming end)
-- ARGV[1] now (ms), ARGV[2] lease (ms), ARGV[3] max commands, ARGV[4..] acknowledged job ids
-- Returns the commands moved to delivered (oldest first).
-- Acks and expiries find a command by id in `inflight`, so no command is decoded twice.
--
-- A command whose max_wait ran out while it waited (expire_waiting.lua put its id in `expired`)
-- is dropped here, when its turn comes, instead of being delivered: its job has ended ERROR.
-- The queue is consumed from the right and filled from the left, so `popped` (commands taken
-- from the right, here or by expire_waiting.lua, less those put back there) is the position of
-- its right end, and a command that was in the queue when it expired is gone once `popped`
-- passes the position its id was given: then the id leaves `expired`. Every copy of it (a
-- routing replay may queue two) goes.
local popped = tonumber(redis.call('GET', KEYS[7]) or '0')
local start = popped

local function settle(id, requeue)
  local item = redis.call('HGET', KEYS[4], id)
  if item then
    -- Every copy: a replay may have queued the command twice and both may have been delivered.
    redis.call('LREM', KEYS[2], 0, item)
    redis.call('HDEL', KEYS[4], id)
    -- The queue is consumed from the right: an expired command goes back there, to be next.
    if requeue then
      redis.call('RPUSH', KEYS[1], item)
      popped = popped - 1
    end
  end
  redis.call('ZREM', KEYS[3], id)
end

-- Acknowledged ids, settled together: one HMGET, HDEL and ZREM for all of them (an LREM each).
if #ARGV >= 4 then
  local acked = {}
  for i = 4, #ARGV do acked[#acked + 1] = ARGV[i] end
  local items = redis.call('HMGET', KEYS[4], unpack(acked))
  local found = {}
  for i, item in ipairs(items) do
    if item then
      -- Every copy: a replay may have queued the command twice and both may have been delivered.
      redis.call('LREM', KEYS[2], 0, item)
      found[#found + 1] = acked[i]
    end
  end
  if #found > 0 then redis.call('HDEL', KEYS[4], unpack(found)) end
  redis.call('ZREM', KEYS[3], unpack(acked))
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, 1000)) do
  settle(id, true)
end

-- Dropped commands looked at per call, at most (each is a few cheap steps).
local MAX_DROPS = 1000
local out, dropped, deadline = {}, 0, tonumber(ARGV[1]) + tonumber(ARGV[2])
-- Written once for the whole batch after the loop: delivered (in the order taken), leases,
-- inflight.
local delivered, leases, inflight = {}, {}, {}
while #out < tonumber(ARGV[3]) and dropped < MAX_DROPS do
  local item = redis.call('RPOP', KEYS[1])
  if not item then break end
  popped = popped + 1
  local ok, cmd = pcall(cjson.decode, item)
  local id = ok and type(cmd) == 'table' and type(cmd.id) == 'string' and cmd.id
  if id and redis.call('ZSCORE', KEYS[5], id) then
    dropped = dropped + 1
  else
    delivered[#delivered + 1] = item
    if id then
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      inflight[#inflight + 1] = id
      inflight[#inflight + 1] = item
      local wait = type(cmd.args) == 'table' and cmd.args.max_wait
      if type(wait) == 'number' and wait > 0 then
        -- Scored past its deadline (routed before now): expire_waiting.lua trims by that.
        redis.call('ZADD', KEYS[6], tonumber(ARGV[1]) + wait * 1000, id)
      end
    end
    out[#out + 1] = item
  end
end
if #delivered > 0 then redis.call('LPUSH', KEYS[2], unpack(delivered)) end
if #leases > 0 then
  redis.call('ZADD', KEYS[3], unpack(leases))
  redis.call('HSET', KEYS[4], unpack(inflight))
end

if redis.call('LLEN', KEYS[1]) == 0 then
  -- Nothing waits: no copy of an expired command is left, and the count starts again.
  redis.call('DEL', KEYS[5], KEYS[7])
elseif popped ~= start then
  redis.call('SET', KEYS[7], popped)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', popped)
end
return out
