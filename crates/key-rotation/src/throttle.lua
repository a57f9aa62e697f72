-- A sliding-window throttle. KEYS: the bucket's zset. ARGV: op ('check' |
-- 'hit'), limit, window_ms, member. Returns 0 when allowed (and recorded for
-- 'hit'), otherwise the wait in ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local blocking = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  return math.max(tonumber(blocking[2]) + window - now, 1)
end
if ARGV[1] == 'hit' then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
end
return 0
