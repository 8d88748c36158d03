-- Move up to N more commands from cmds_queue to a routing list, oldest first.
-- KEYS[1] cmds_queue, KEYS[2] {cmds_queue}:routing:<instance>
-- ARGV[1] N
-- Returns the moved commands.
local moved = {}
for i = 1, tonumber(ARGV[1]) do
  local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not item then break end
  moved[#moved + 1] = item
end
return moved
