-- What the operators' views read of one model, in one call: its buckets'
-- use and cooldowns, and its disabled keys.
-- KEYS: the model's disabled-keys hash, then per bucket its window zset and
-- state hash. ARGV: window_ms, day_start_ms.
-- Returns {now_ms, buckets, disabled}: per bucket {requests, tokens, today,
-- cooldown until, cooldown reason}; the disabled-keys hash as HGETALL gives
-- it ("<until>|<reason>" or "op|<reason>" per key id).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local day_field = 'd:' .. ARGV[2]
local buckets = {}
for i = 2, #KEYS, 2 do
  local win, st = KEYS[i], KEYS[i + 1]
  local fields = redis.call('HMGET', st, 'tok', day_field, 'cu', 'cr')
  local stored = tonumber(fields[1])
  local count, total
  if stored and redis.call('ZCOUNT', win, '-inf', cutoff) == 0 then
    -- Nothing left the window since the last admission: its totals hold.
    count, total = redis.call('ZCARD', win), stored
  else
    -- Entries left: prune, and store the new total as every pruner must.
    count, total = prune(win, stored, cutoff)
    if stored then redis.call('HSET', st, 'tok', total) end
  end
  buckets[#buckets + 1] = {count, total, tonumber(fields[2] or 0), tonumber(fields[3] or 0), fields[4] or ''}
end
return {now, buckets, redis.call('HGETALL', KEYS[1])}
