-- Adjusts an admitted entry. KEYS: window zset, day counter, lease zset, GCRA tat.
-- ARGV: op ('reconcile' | 'refund'), entry_id, admitted_at_ms, tokens, pacing interval ms.
local prefix = ARGV[2] .. ':'
local at = tonumber(ARGV[3])
local members = redis.call('ZRANGEBYSCORE', KEYS[1], at, at)
for _, member in ipairs(members) do
  if string.sub(member, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[1], member)
    if ARGV[1] == 'reconcile' then
      redis.call('ZADD', KEYS[1], at, prefix .. ARGV[4])
    end
  end
end
if ARGV[1] == 'refund' then
  redis.call('ZREM', KEYS[3], ARGV[2])
  local day = tonumber(redis.call('GET', KEYS[2]) or 0)
  if day > 0 then redis.call('DECR', KEYS[2]) end
  local tat = redis.call('GET', KEYS[4])
  if tat then
    redis.call('SET', KEYS[4], math.max(tonumber(tat) - tonumber(ARGV[5]), 0), 'KEEPTTL')
  end
end
return 1
