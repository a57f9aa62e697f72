-- Adds admissions made while Redis was unreachable. KEYS: window zset,
-- state hash. ARGV: window_ms, then triples of (at_ms, member, tokens).
local added = 0
for j = 2, #ARGV, 3 do
  if redis.call('ZADD', KEYS[1], 'NX', tonumber(ARGV[j]), ARGV[j + 1]) == 1 then
    added = added + tonumber(ARGV[j + 2])
  end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) + 1000)
if redis.call('HEXISTS', KEYS[2], 'tok') == 1 then redis.call('HINCRBY', KEYS[2], 'tok', added) end
return 1
