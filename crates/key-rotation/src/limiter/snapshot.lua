-- What the operators' views read of one model, in one call: its buckets'
-- use and cooldowns, and its keys' disables.
-- KEYS: the model's disabled-keys hash, then per bucket its window zset and
-- state hash. ARGV: window_ms, day_start_ms, then the key ids to read.
-- Returns strings: now_ms; per bucket requests, tokens, today, cooldown
-- until, cooldown reason; per key disabled until (0: not, -1: until an
-- operator), reason.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local day_field = 'd:' .. ARGV[2]
local out = {tostring(now)}
for i = 2, #KEYS, 2 do
  local win, st = KEYS[i], KEYS[i + 1]
  local fields = redis.call('HMGET', st, 'tok', day_field, 'cu', 'cr')
  local stored, cutoff = tonumber(fields[1]), now - window
  local count, total
  if stored and redis.call('ZCOUNT', win, '-inf', cutoff) == 0 then
    -- Nothing left the window since the last admission: its totals hold.
    count, total = redis.call('ZCARD', win), stored
  else
    -- Entries left: prune, and store the new total as every pruner must.
    count, total = prune(win, stored, cutoff)
    if stored then redis.call('HSET', st, 'tok', total) end
  end
  out[#out + 1] = tostring(count)
  out[#out + 1] = tostring(total)
  out[#out + 1] = tostring(tonumber(fields[2] or 0))
  out[#out + 1] = tostring(tonumber(fields[3] or 0))
  out[#out + 1] = fields[4] or ''
end
for j = 3, #ARGV do
  local value = redis.call('HGET', KEYS[1], ARGV[j])
  if not value then
    out[#out + 1] = '0'
    out[#out + 1] = ''
  else
    local operator_reason = string.match(value, '^op|(.*)$')
    if operator_reason then
      out[#out + 1] = '-1'
      out[#out + 1] = operator_reason
    else
      local until_ms, reason = string.match(value, '^(%d+)|(.*)$')
      out[#out + 1] = until_ms or '0'
      out[#out + 1] = reason or ''
    end
  end
end
return out
