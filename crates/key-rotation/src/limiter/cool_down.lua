-- Sets a restriction for ARGV[1] ms with reason ARGV[2], never shortening a
-- longer one already in place. KEYS: the restriction key.
local current = redis.call('PTTL', KEYS[1])
local wanted = tonumber(ARGV[1])
if current < wanted then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', wanted)
end
return 1
