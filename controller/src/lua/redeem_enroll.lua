-- Take one use of an enrollment code, if it has one left and has not expired.
-- KEYS[1] auth:enroll
-- ARGV[1] SHA-256 of the code, ARGV[2] now (ms)
-- Returns {'ok', record} with the record as it was before this use, or {'unknown'},
-- {'expired'} (the record is deleted), {'used'} (no uses left; kept until it expires).
-- The record is JSON written by enroll.rs with `uses` first (`{"uses":N,…`); only that number
-- is rewritten here, so the rest (64-bit ids, empty lists) is never re-encoded by cjson.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'unknown'} end
local record = cjson.decode(raw)
if tonumber(record.expires) <= tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return {'expired'}
end
local uses = tonumber(record.uses)
if uses <= 0 then return {'used'} end
local left, n = string.gsub(raw, '^{"uses":%d+,', '{"uses":' .. (uses - 1) .. ',', 1)
if n ~= 1 then return redis.error_reply('enrollment record without a leading uses field') end
redis.call('HSET', KEYS[1], ARGV[1], left)
return {'ok', raw}
