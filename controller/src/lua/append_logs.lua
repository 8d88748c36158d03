-- Append one agent's forwarded log messages to one stream, each message once.
-- KEYS[1] the stream (`log.<domain>.<name>` or `alerts`), KEYS[2] its high-water hash
--   (`{<stream>}:seq`, in the stream's slot: field "gid:nid" -> largest message id appended)
-- ARGV[1] "gid:nid", ARGV[2] maxlen (MAXLEN ~), ARGV[3] gid, ARGV[4] nid, ARGV[5] ttl (s) of
--   the stream and its mark, refreshed when something is appended; then 7 values per message,
--   ascending by id: id, jobid, domain, name, epoch, level, data (already cut to its bound)
-- Returns the number of messages appended; the others (id <= the high-water mark) were
-- appended by an earlier post whose answer the agent did not get.
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
local top, top_text, added = last, nil, 0
for i = 6, #ARGV, 7 do
  local id = tonumber(ARGV[i])
  if id and id > top then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
      'id', ARGV[i], 'jobid', ARGV[i + 1], 'domain', ARGV[i + 2], 'name', ARGV[i + 3],
      'epoch', ARGV[i + 4], 'level', ARGV[i + 5], 'data', ARGV[i + 6],
      'gid', ARGV[3], 'nid', ARGV[4])
    top, top_text, added = id, ARGV[i], added + 1
  end
end
if top_text then
  redis.call('HSET', KEYS[2], ARGV[1], top_text)
  -- Both expire together: a mark outliving its stream would only hold stale ids.
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return added
