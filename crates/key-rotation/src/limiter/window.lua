-- Shared by every script that reads a bucket (prepended to each).
-- A bucket is a window zset (member "<id>:<tokens>", score = admission ms)
-- plus one state hash: tok (tokens in the window), tat (GCRA), d:<day start>
-- (requests that Pacific day), cu / cr (cooldown until ms, and why).

local function entry_tokens(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end

-- Drops window entries at or before `cutoff`, keeping the token total in
-- step. Returns the request count and token total.
local function prune(win, total, cutoff)
  if not total then
    -- No total yet (first use, or the hash expired): count from the log.
    total = 0
    if redis.call('EXISTS', win) == 1 then
      for _, member in ipairs(redis.call('ZRANGE', win, 0, -1)) do total = total + entry_tokens(member) end
    end
  end
  local expired = redis.call('ZRANGEBYSCORE', win, '-inf', cutoff)
  if #expired > 0 then
    for _, member in ipairs(expired) do total = total - entry_tokens(member) end
    redis.call('ZREMRANGEBYSCORE', win, '-inf', cutoff)
  end
  if total < 0 then total = 0 end
  return redis.call('ZCARD', win), total
end

-- Extends a key's expiry to at least `at_ms`, never shortening it.
local function expire_at_least(key, at_ms, now)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or now + ttl < at_ms then redis.call('PEXPIREAT', key, at_ms) end
end

-- A disable is "<until ms>|<reason>" in the model's hash of disabled keys,
-- or "op|<reason>" when only an operator lifts it.
local function disabled_until(off, key_id)
  local value = redis.call('HGET', off, key_id)
  if not value then return 0 end
  if string.sub(value, 1, 3) == 'op|' then return 9007199254740991 end
  return tonumber(string.match(value, '^(%d+)|')) or 0
end
