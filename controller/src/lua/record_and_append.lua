-- On one server (not a cluster): record_result.lua then append_result.lua for one result, in
-- one round trip (atomically, too). jsacc builds this script with the two above it as the
-- functions `record_result(KEYS, ARGV)` and `append_result(KEYS, ARGV)` (state.rs).
-- KEYS[1] job:<id>, KEYS[2] cmds_queue_<id>, KEYS[3] {cmds_queue_<id>}:appended
-- ARGV[1..7] record_result.lua's ARGV, ARGV[8..14] append_result.lua's ARGV[1..7], ARGV[15] the
-- channel of job events, ARGV[16] and ARGV[17] the text of the result's event before and after
-- the job's state (the event goes out when the result is recorded now)
-- Returns record_result.lua's {status, job state}; the result is appended for 'recorded' and
-- 'duplicate' alike, as results.rs does with the two scripts.
local recorded = record_result({KEYS[1]},
  {ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]})
local status = recorded[1]
if status == 'recorded' or status == 'duplicate' then
  local event = ''
  if status == 'recorded' then event = ARGV[16] .. recorded[2] .. ARGV[17] end
  append_result({KEYS[2], KEYS[3]},
    {ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15], event})
end
return recorded
