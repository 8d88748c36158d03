-- One long-poll step of an agent: settle acknowledgements, put back expired leases, hand out work.
-- KEYS[1] agent:{g:n}:queue, KEYS[2] agent:{g:n}:delivered, KEYS[3] agent:{g:n}:leases
-- ARGV[1] now (ms), ARGV[2] lease (ms), ARGV[3] max commands, ARGV[4..] acknowledged job ids
-- Returns the commands moved to delivered (oldest first).
local now = tonumber(ARGV[1])

-- Ids to drop from delivered: acknowledged ones, and expired ones that go back to the queue.
local acked, expired, n = {}, {}, 0
for i = 4, #ARGV do acked[ARGV[i]] = true; n = n + 1 end
local leases = redis.call('HGETALL', KEYS[3])
for i = 1, #leases, 2 do
  if not acked[leases[i]] and tonumber(leases[i + 1]) <= now then expired[leases[i]] = true; n = n + 1 end
end
if n > 0 then
  local requeue = {}
  for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    local ok, cmd = pcall(cjson.decode, item)
    local id = ok and type(cmd) == 'table' and cmd.id or nil
    if id and (acked[id] or expired[id]) then
      redis.call('LREM', KEYS[2], 1, item)
      redis.call('HDEL', KEYS[3], id)
      if expired[id] then requeue[#requeue + 1] = item end
    end
  end
  for id in pairs(acked) do redis.call('HDEL', KEYS[3], id) end
  -- The queue is consumed from the right: put expired ones back there, oldest delivered first out.
  for i = 1, #requeue do redis.call('RPUSH', KEYS[1], requeue[i]) end
end

local out = {}
for i = 1, tonumber(ARGV[3]) do
  local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not item then break end
  local ok, cmd = pcall(cjson.decode, item)
  if ok and type(cmd) == 'table' and type(cmd.id) == 'string' then
    redis.call('HSET', KEYS[3], cmd.id, now + tonumber(ARGV[2]))
  end
  out[#out + 1] = item
end
return out
