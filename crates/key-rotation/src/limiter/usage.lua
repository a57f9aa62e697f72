-- KEYS: window zset, day counter, cooldown. ARGV: window_ms.
-- Returns {requests, tokens, today, cooldown_pttl, cooldown_reason}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local total = 0
for _, member in ipairs(members) do
  total = total + (tonumber(string.match(member, ':(%d+)$')) or 0)
end
local today = tonumber(redis.call('GET', KEYS[2]) or 0)
local pttl = redis.call('PTTL', KEYS[3])
local reason = redis.call('GET', KEYS[3]) or ''
return {#members, total, today, pttl, reason, now}
