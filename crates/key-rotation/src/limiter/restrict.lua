-- Cooldowns and disables. KEYS[1]: a bucket's state hash (cooldowns) or a
-- model's disabled-keys hash (disables).
-- ARGV: op, then:
--   'cool' duration_ms reason: cool the bucket, never shortening a longer one
--   'uncool': lift the cooldown
--   'disable' key_id duration_ms reason / 'enable' key_id; a duration of
--     'op' is a disable only an operator lifts (a leaked key): stored as
--     "op|<reason>", and the hash then keeps no expiry ('__persist'), or a
--     later timed disable would expire it with the rest
--   'disabled' key_id: {until_ms (-1: until an operator), reason, now_ms}
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
  if ARGV[3] == 'op' then
    redis.call('HSET', KEYS[1], ARGV[2], 'op|' .. ARGV[4], '__persist', 1)
    redis.call('PERSIST', KEYS[1])
  else
    local until_ms = now + tonumber(ARGV[3])
    redis.call('HSET', KEYS[1], ARGV[2], until_ms .. '|' .. ARGV[4])
    if redis.call('HEXISTS', KEYS[1], '__persist') == 0 then
      expire_at_least(KEYS[1], until_ms + 1000, now)
    end
  end
elseif op == 'enable' then
  redis.call('HDEL', KEYS[1], ARGV[2])
elseif op == 'disabled' then
  local value = redis.call('HGET', KEYS[1], ARGV[2])
  if not value then return {0, '', now} end
  local operator_reason = string.match(value, '^op|(.*)$')
  if operator_reason then return {-1, operator_reason, now} end
  local until_ms, reason = string.match(value, '^(%d+)|(.*)$')
  return {tonumber(until_ms), reason, now}
end
return {1, '', now}
