-- KEYS: window zset, state hash. ARGV: window_ms, day start ms.
-- Returns {requests, tokens, today, cooldown_until_ms, cooldown_reason, now_ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HMGET', KEYS[2], 'tok', 'd:' .. ARGV[2], 'cu', 'cr')
local count, total = prune(KEYS[1], tonumber(fields[1]), now - tonumber(ARGV[1]))
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'tok', total) end
return {count, total, tonumber(fields[2] or 0), tonumber(fields[3] or 0), fields[4] or '', now}
