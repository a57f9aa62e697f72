-- Per-user fair use. KEYS: GCRA tat, token window zset (member "<id>:<tokens>").
-- ARGV: op ('admit' | 'refund'), interval_ms, tolerance_ms, tpm, tokens, entry_id.
-- Returns {1, now_ms} admitted, {0, wait_ms} limited, {2, 0} refunded.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[2])
if ARGV[1] == 'refund' then
  local tat = redis.call('GET', KEYS[1])
  if tat then redis.call('SET', KEYS[1], math.max(tonumber(tat) - interval, 0), 'KEEPTTL') end
  local prefix = ARGV[6] .. ':'
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if string.sub(member, 1, #prefix) == prefix then redis.call('ZREM', KEYS[2], member) end
  end
  return {2, 0}
end
local tolerance, tpm, tokens = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = math.max(tat - tolerance - now, 0)
local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local used = 0
for j = 1, #entries, 2 do used = used + (tonumber(string.match(entries[j], ':(%d+)$')) or 0) end
if used + tokens > tpm then
  local remaining = used
  for j = 1, #entries, 2 do
    remaining = remaining - (tonumber(string.match(entries[j], ':(%d+)$')) or 0)
    if remaining + tokens <= tpm then
      wait = math.max(wait, tonumber(entries[j + 1]) + 60000 - now)
      break
    end
  end
end
if wait > 0 then return {0, wait} end
redis.call('SET', KEYS[1], tat + interval, 'PX', tat + interval - now + tolerance + 60000)
redis.call('ZADD', KEYS[2], now, ARGV[6] .. ':' .. tokens)
redis.call('PEXPIRE', KEYS[2], 61000)
return {1, now}
