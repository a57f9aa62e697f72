-- KEYS: window zset, token total, day counter, cooldown. ARGV: window_ms.
-- Returns {requests, tokens, today, cooldown_pttl, cooldown_reason, now_ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local count, total = prune(KEYS[1], KEYS[2], now - window)
if count > 0 then store_total(KEYS[2], total, window + 1000) end
local today = tonumber(redis.call('GET', KEYS[3]) or 0)
local pttl = redis.call('PTTL', KEYS[4])
local reason = redis.call('GET', KEYS[4]) or ''
return {count, total, today, pttl, reason, now}
