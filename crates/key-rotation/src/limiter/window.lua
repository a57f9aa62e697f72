-- Shared by every script that reads a bucket window (prepended to each).
-- A window is a zset (member "<id>:<tokens>", score = admission ms) plus a
-- running token total, so nothing walks the whole log on the hot path.

local function entry_tokens(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end

-- Drops entries at or before `cutoff`, keeping the token total in step.
-- Returns the window's request count and token total.
local function prune(win, tok, cutoff)
  local total = redis.call('GET', tok)
  if not total and redis.call('EXISTS', win) == 1 then
    -- The total was lost (an eviction): rebuild it once from the log.
    total = 0
    for _, member in ipairs(redis.call('ZRANGE', win, 0, -1)) do total = total + entry_tokens(member) end
  end
  total = tonumber(total or 0)
  local expired = redis.call('ZRANGEBYSCORE', win, '-inf', cutoff)
  if #expired > 0 then
    for _, member in ipairs(expired) do total = total - entry_tokens(member) end
    redis.call('ZREMRANGEBYSCORE', win, '-inf', cutoff)
  end
  if total < 0 then total = 0 end
  return redis.call('ZCARD', win), total
end

local function store_total(tok, total, ttl)
  redis.call('SET', tok, total, 'PX', ttl)
end
