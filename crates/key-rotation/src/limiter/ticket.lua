-- Adjusts an admitted entry. KEYS: window zset, state hash, lease zset.
-- ARGV: op ('reconcile' | 'refund'), entry_id, admitted_at_ms, tokens,
-- pacing interval ms, day start ms, window ms.
local prefix = ARGV[2] .. ':'
local at = tonumber(ARGV[3])
local delta = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], at, at)) do
  if string.sub(member, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[1], member)
    delta = delta - entry_tokens(member)
    if ARGV[1] == 'reconcile' then
      redis.call('ZADD', KEYS[1], at, prefix .. ARGV[4])
      -- The ZREM may have emptied (and so deleted) the window: the ZADD
      -- then made it anew, without the expiry its entries need.
      local t = redis.call('TIME')
      local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      expire_at_least(KEYS[1], at + tonumber(ARGV[7]) + 1000, now)
      delta = delta + tonumber(ARGV[4])
    end
  end
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 1 end
local total = redis.call('HGET', KEYS[2], 'tok')
if delta ~= 0 and total then
  -- Without a total, the next reader recounts from the log.
  redis.call('HSET', KEYS[2], 'tok', math.max(tonumber(total) + delta, 0))
end
if ARGV[1] == 'refund' then
  redis.call('ZREM', KEYS[3], ARGV[2])
  local day_field = 'd:' .. ARGV[6]
  if tonumber(redis.call('HGET', KEYS[2], day_field) or 0) > 0 then redis.call('HINCRBY', KEYS[2], day_field, -1) end
  local tat = redis.call('HGET', KEYS[2], 'tat')
  if tat then redis.call('HSET', KEYS[2], 'tat', math.max(tonumber(tat) - tonumber(ARGV[5]), 0)) end
end
return 1
