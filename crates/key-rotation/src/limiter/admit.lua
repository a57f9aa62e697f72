-- One admission, atomically, in one round trip. Mirrors MemoryLimiter.
-- KEYS: per candidate i (7 each): window zset, token total, GCRA tat, day
--       counter, lease zset, bucket cooldown, key disable; then the
--       round-robin counter.
-- ARGV: n, tokens, pick (0 first fit, 1 least loaded), rotate (0/1),
--       window_ms, lease_ttl_ms, entry_id, day_start_ms, day_end_ms,
--       then per candidate: rpm, tpm, rpd (0 none), burst, max_in_flight (0 none).
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

local function limits(i)
  local base = 9 + (i - 1) * 5
  return tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]),
         tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5])
end

local counts = {}

-- Returns fits (bool), wait_ms (or -1 for never), remaining fraction.
local function evaluate(i)
  local k = (i - 1) * 7
  local win, tok, tat_key, day_key, lease_key, cool_key, dis_key =
    KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6], KEYS[k + 7]
  local rpm, tpm, rpd, burst, max_in_flight = limits(i)
  if redis.call('EXISTS', dis_key) == 1 then return false, -1, 0 end
  if tokens > tpm then return false, -1, 0 end
  local wait = 0
  local cool = redis.call('PTTL', cool_key)
  if cool > 0 then wait = cool end

  local count, total = prune(win, tok, now - window)
  counts[i] = {count, total}
  if count >= rpm then
    local freeing = redis.call('ZRANGE', win, count - rpm, count - rpm, 'WITHSCORES')
    wait = math.max(wait, tonumber(freeing[2]) + window - now)
  end
  if total + tokens > tpm then
    -- Walk from the oldest, a chunk at a time, until enough tokens leave.
    local remaining, start, found = total, 0, false
    while not found do
      local chunk = redis.call('ZRANGE', win, start, start + 63, 'WITHSCORES')
      if #chunk == 0 then break end
      for j = 1, #chunk, 2 do
        remaining = remaining - entry_tokens(chunk[j])
        if remaining + tokens <= tpm then
          wait = math.max(wait, tonumber(chunk[j + 1]) + window - now)
          found = true
          break
        end
      end
      start = start + 64
    end
  end

  local interval = math.max(math.floor(window / rpm), 1)
  local tolerance = interval * (burst - 1)
  local tat = tonumber(redis.call('GET', tat_key) or now)
  if tat < now then tat = now end
  wait = math.max(wait, tat - tolerance - now)

  local today = tonumber(redis.call('GET', day_key) or 0)
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
  local k = (i - 1) * 7
  local rpm, _, _, _, max_in_flight = limits(i)
  local interval = math.max(math.floor(window / rpm), 1)
  local tat = tonumber(redis.call('GET', KEYS[k + 3]) or now)
  if tat < now then tat = now end
  redis.call('SET', KEYS[k + 3], tat + interval, 'PX', 2 * window + interval)
  redis.call('ZADD', KEYS[k + 1], now, entry_id .. ':' .. tokens)
  redis.call('PEXPIRE', KEYS[k + 1], window + 1000)
  local count, total = counts[i][1] + 1, counts[i][2] + tokens
  store_total(KEYS[k + 2], total, window + 1000)
  redis.call('INCR', KEYS[k + 4])
  redis.call('PEXPIREAT', KEYS[k + 4], day_end + 3600000)
  if max_in_flight > 0 then
    redis.call('ZADD', KEYS[k + 5], now + lease_ttl, entry_id)
    redis.call('PEXPIRE', KEYS[k + 5], lease_ttl + 1000)
  end
  return {1, i, now, count, total}
end

local start = 0
if rotate == 1 then
  local rr = KEYS[n * 7 + 1]
  start = redis.call('INCR', rr) % n
  redis.call('PEXPIRE', rr, 86400000)
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
