-- One long-poll step of an agent: settle acknowledgements, put back expired leases, hand out work.
-- KEYS[1] agent:{g:n}:queue, KEYS[2] agent:{g:n}:delivered, KEYS[3] agent:{g:n}:leases (zset: id → deadline ms),
-- KEYS[4] agent:{g:n}:inflight (hash: id → command)
-- ARGV[1] now (ms), ARGV[2] lease (ms), ARGV[3] max commands, ARGV[4..] acknowledged job ids
-- Returns the commands moved to delivered (oldest first).
-- Acks and expiries find a command by id in `inflight`, so no command is decoded twice.
local function settle(id, requeue)
  local item = redis.call('HGET', KEYS[4], id)
  if item then
    -- Every copy: a replay may have queued the command twice and both may have been delivered.
    redis.call('LREM', KEYS[2], 0, item)
    redis.call('HDEL', KEYS[4], id)
    -- The queue is consumed from the right: an expired command goes back there, to be next.
    if requeue then redis.call('RPUSH', KEYS[1], item) end
  end
  redis.call('ZREM', KEYS[3], id)
end

for i = 4, #ARGV do settle(ARGV[i], false) end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, 1000)) do
  settle(id, true)
end

local out, deadline = {}, tonumber(ARGV[1]) + tonumber(ARGV[2])
for i = 1, tonumber(ARGV[3]) do
  local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not item then break end
  local ok, cmd = pcall(cjson.decode, item)
  if ok and type(cmd) == 'table' and type(cmd.id) == 'string' then
    redis.call('ZADD', KEYS[3], deadline, cmd.id)
    redis.call('HSET', KEYS[4], cmd.id, item)
  end
  out[#out + 1] = item
end
return out
