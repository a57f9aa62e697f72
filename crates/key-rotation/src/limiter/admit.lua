-- One admission, atomically, in one round trip. Mirrors MemoryLimiter.
-- KEYS: per candidate i (3 each): window zset, state hash, lease zset; then
--       the model's disabled-keys hash, its round-robin counter, and this
--       admission's marker (which candidate, when: for withdrawing an
--       admission whose reply was lost).
-- ARGV: n, tokens, pick (0 first fit, 1 least loaded), rotate (0/1),
--       window_ms, lease_ttl_ms, entry_id, day_start_ms, day_end_ms, then per
--       candidate: key_id, rpm, tpm, rpd (0 none), burst, max_in_flight (0 none).
-- Returns {1, index (1-based), now_ms, requests, tokens} when admitted (the
-- bucket's window after this admission), {0, wait_ms} when no candidate has
-- room (wait_ms = -1: none ever will).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local pick = tonumber(ARGV[3])
local rotate = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local lease_ttl = tonumber(ARGV[6])
local entry_id = ARGV[7]
local day_start = tonumber(ARGV[8])
local day_end = tonumber(ARGV[9])
local day_field = 'd:' .. ARGV[8]
local off = KEYS[n * 3 + 1]

local function spec(i)
  local base = 9 + (i - 1) * 6
  return ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4]),
         tonumber(ARGV[base + 5]), tonumber(ARGV[base + 6])
end

local seen = {}

-- Returns fits (bool), wait_ms (or -1 for never), remaining fraction.
local function evaluate(i)
  local win, state, lease_key = KEYS[(i - 1) * 3 + 1], KEYS[(i - 1) * 3 + 2], KEYS[(i - 1) * 3 + 3]
  local key_id, rpm, tpm, rpd, burst, max_in_flight = spec(i)
  if disabled_until(off, key_id) > now then return false, -1, 0 end
  if tokens > tpm then return false, -1, 0 end
  local fields = redis.call('HMGET', state, 'tok', 'tat', day_field, 'cu')
  local wait = 0
  local cool_until = tonumber(fields[4] or 0)
  if cool_until > now then wait = cool_until - now end

  local count, total = prune(win, tonumber(fields[1]), now - window)
  local today = tonumber(fields[3] or 0)
  local tat = tonumber(fields[2] or now)
  if tat < now then tat = now end
  seen[i] = {count, total, tat}
  if count >= rpm then
    local freeing = redis.call('ZRANGE', win, count - rpm, count - rpm, 'WITHSCORES')
    wait = math.max(wait, tonumber(freeing[2]) + window - now)
  end
  if total + tokens > tpm then
    -- Walk from the oldest, a chunk at a time, until enough tokens leave;
    -- at most four chunks. Past them the wait is a lower bound: the caller
    -- wakes when the last entry read leaves, and asks again.
    local remaining, start, found, last_seen = total, 0, false, nil
    while not found and start < 256 do
      local chunk = redis.call('ZRANGE', win, start, start + 63, 'WITHSCORES')
      if #chunk == 0 then break end
      for j = 1, #chunk, 2 do
        remaining = remaining - entry_tokens(chunk[j])
        last_seen = tonumber(chunk[j + 1])
        if remaining + tokens <= tpm then
          found = true
          break
        end
      end
      start = start + 64
    end
    if last_seen then wait = math.max(wait, last_seen + window - now, 1) end
  end

  local interval = math.max(math.floor(window / rpm), 1)
  wait = math.max(wait, tat - interval * (burst - 1) - now)
  if rpd > 0 and today >= rpd then wait = math.max(wait, day_end - now) end

  if max_in_flight > 0 then
    redis.call('ZREMRANGEBYSCORE', lease_key, '-inf', now)
    if redis.call('ZCARD', lease_key) >= max_in_flight then
      local first = redis.call('ZRANGE', lease_key, 0, 0, 'WITHSCORES')
      wait = math.max(wait, math.max(tonumber(first[2]) - now, 1))
    end
  end
  if wait > 0 then return false, wait, 0 end

  local fraction = 1 - count / rpm
  fraction = math.min(fraction, 1 - total / tpm)
  if rpd > 0 then fraction = math.min(fraction, 1 - today / rpd) end
  return true, 0, fraction
end

local function admit(i)
  local win, state, lease_key = KEYS[(i - 1) * 3 + 1], KEYS[(i - 1) * 3 + 2], KEYS[(i - 1) * 3 + 3]
  local _, rpm, _, _, _, max_in_flight = spec(i)
  local count, total, tat = seen[i][1] + 1, seen[i][2] + tokens, seen[i][3]
  local interval = math.max(math.floor(window / rpm), 1)
  redis.call('ZADD', win, now, entry_id .. ':' .. tokens)
  redis.call('PEXPIRE', win, window + 1000)
  redis.call('HSET', state, 'tok', total, 'tat', tat + interval)
  -- The hash must outlive the day's counter; it only needs extending when
  -- that counter starts (nothing else ever shortens its expiry).
  if redis.call('HINCRBY', state, day_field, 1) == 1 then
    expire_at_least(state, day_end + 3600000, now)
    -- A new day: the days before count for nothing now.
    for _, field in ipairs(redis.call('HKEYS', state)) do
      if string.sub(field, 1, 2) == 'd:' and field ~= day_field then redis.call('HDEL', state, field) end
    end
  end
  if max_in_flight > 0 then
    redis.call('ZADD', lease_key, now + lease_ttl, entry_id)
    redis.call('PEXPIRE', lease_key, lease_ttl + 1000)
  end
  redis.call('SET', KEYS[n * 3 + 3], i .. ':' .. now, 'PX', window + 1000)
  return {1, i, now, count, total}
end

local start = 0
if rotate == 1 then
  local rr = KEYS[n * 3 + 2]
  local turn = redis.call('INCR', rr)
  if turn == 1 then redis.call('PEXPIRE', rr, 86400000) end
  start = turn % n
end

local earliest = -1
local best, best_fraction = nil, -1
for offset = 0, n - 1 do
  local i = ((start + offset) % n) + 1
  local fits, wait, fraction = evaluate(i)
  if fits then
    if pick == 0 then return admit(i) end
    if fraction > best_fraction then best, best_fraction = i, fraction end
  elseif wait >= 0 then
    if earliest < 0 or wait < earliest then earliest = wait end
  end
end
if best then return admit(best) end
return {0, earliest}
