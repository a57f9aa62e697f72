-- Adjusts an admitted entry. KEYS: window zset, token total, day counter,
-- lease zset, GCRA tat. ARGV: op ('reconcile' | 'refund'), entry_id,
-- admitted_at_ms, tokens, pacing interval ms.
local prefix = ARGV[2] .. ':'
local at = tonumber(ARGV[3])
local delta = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], at, at)) do
  if string.sub(member, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[1], member)
    delta = delta - entry_tokens(member)
    if ARGV[1] == 'reconcile' then
      redis.call('ZADD', KEYS[1], at, prefix .. ARGV[4])
      delta = delta + tonumber(ARGV[4])
    end
  end
end
local total = redis.call('GET', KEYS[2])
if total and delta ~= 0 then
  redis.call('SET', KEYS[2], math.max(tonumber(total) + delta, 0), 'KEEPTTL')
end
if ARGV[1] == 'refund' then
  redis.call('ZREM', KEYS[4], ARGV[2])
  local day = tonumber(redis.call('GET', KEYS[3]) or 0)
  if day > 0 then redis.call('DECR', KEYS[3]) end
  local tat = redis.call('GET', KEYS[5])
  if tat then
    redis.call('SET', KEYS[5], math.max(tonumber(tat) - tonumber(ARGV[5]), 0), 'KEEPTTL')
  end
end
return 1
