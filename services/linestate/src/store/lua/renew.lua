-- renewLease / releaseChip. ARGV: 3 chip, 4 token, 5 'renew' | 'release'. Returns expiry ms.
local id, token, mode = ARGV[3], ARGV[4], ARGV[5]
local key = kc(id)
local m = redis.call('HMGET', key, 'n', 't', 'l')
if not m[1] then fail('NOT_FOUND', 'chip ' .. id .. ' does not exist') end
local t = m[2] or '0'
if t == '0' then fail('FAILED_PRECONDITION', 'stale lease token ' .. token .. ', chip ' .. id .. ' has no lease') end
if t ~= token then fail('FAILED_PRECONDITION', 'stale lease token ' .. token .. ', current ' .. t) end
if mode == 'release' then
  redis.call('HSET', key, 't', '0', 'e', '0')
  return 0
end
local e = now_ms() + tonumber(m[3])
redis.call('HSET', key, 'e', itoa(e))
return e
