-- Cooldowns and disables. KEYS[1]: a bucket's state hash (cooldowns) or a
-- model's disabled-keys hash (disables).
-- ARGV: op, then:
--   'cool' duration_ms reason: cool the bucket, never shortening a longer one
--   'uncool': lift the cooldown
--   'disable' key_id duration_ms reason / 'enable' key_id
--   'disabled' key_id: {until_ms, reason, now_ms}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
if op == 'cool' then
  local wanted = now + tonumber(ARGV[2])
  if tonumber(redis.call('HGET', KEYS[1], 'cu') or 0) < wanted then
    redis.call('HSET', KEYS[1], 'cu', wanted, 'cr', ARGV[3])
    expire_at_least(KEYS[1], wanted + 1000, now)
  end
elseif op == 'uncool' then
  redis.call('HDEL', KEYS[1], 'cu', 'cr')
elseif op == 'disable' then
  local until_ms = now + tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], ARGV[2], until_ms .. '|' .. ARGV[4])
  expire_at_least(KEYS[1], until_ms + 1000, now)
elseif op == 'enable' then
  redis.call('HDEL', KEYS[1], ARGV[2])
elseif op == 'disabled' then
  local value = redis.call('HGET', KEYS[1], ARGV[2])
  if not value then return {0, '', now} end
  local until_ms, reason = string.match(value, '^(%d+)|(.*)$')
  return {tonumber(until_ms), reason, now}
end
return {1, '', now}
