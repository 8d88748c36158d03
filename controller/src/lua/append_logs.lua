-- Append one agent's forwarded log messages to one stream, each message once.
-- KEYS[1] the stream (`log.<domain>.<name>` or `alerts`), KEYS[2] its high-water hash
--   (`{<stream>}:seq`, in the stream's slot: field "gid:nid" -> largest message id appended)
-- ARGV[1] "gid:nid", ARGV[2] maxlen (MAXLEN ~), ARGV[3] gid, ARGV[4] nid, then 7 values per
--   message, ascending by id: id, jobid, domain, name, epoch, level, data
-- Returns the number of messages appended; the others (id <= the high-water mark) were
-- appended by an earlier post whose answer the agent did not get.
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
local top, top_text, added = last, nil, 0
for i = 5, #ARGV, 7 do
  local id = tonumber(ARGV[i])
  if id and id > top then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
      'id', ARGV[i], 'jobid', ARGV[i + 1], 'domain', ARGV[i + 2], 'name', ARGV[i + 3],
      'epoch', ARGV[i + 4], 'level', ARGV[i + 5], 'data', ARGV[i + 6],
      'gid', ARGV[3], 'nid', ARGV[4])
    top, top_text, added = id, ARGV[i], added + 1
  end
end
if top_text then redis.call('HSET', KEYS[2], ARGV[1], top_text) end
return added
