-- Adds admissions made while Redis was unreachable. KEYS: window zset,
-- token total. ARGV: window_ms, then triples of (at_ms, member, tokens).
local window = tonumber(ARGV[1])
local total = tonumber(redis.call('GET', KEYS[2]) or 0)
for j = 2, #ARGV, 3 do
  if redis.call('ZADD', KEYS[1], 'NX', tonumber(ARGV[j]), ARGV[j + 1]) == 1 then
    total = total + tonumber(ARGV[j + 2])
  end
end
redis.call('PEXPIRE', KEYS[1], window + 1000)
redis.call('SET', KEYS[2], total, 'PX', window + 1000)
return 1
