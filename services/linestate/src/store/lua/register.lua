-- registerChip. ARGV: 3 chip, 4 ngpio, 5 owner, 6 ttl ms, 7 names count (0 or ngpio), 8.. names
-- Returns {token, restored, tookOver, chip_lines_dump}
local id, ngpio, owner, ttl = ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local nnames = tonumber(ARGV[7])
local key = kc(id)
local m = redis.call('HMGET', key, 'n', 'o', 't', 'e')
local exists = m[1] ~= false
local now = now_ms()
local tookOver = 0
if exists then
  local have = tonumber(m[1])
  if have ~= ngpio then
    fail('FAILED_PRECONDITION', 'chip ' .. id .. ' exists with ngpio ' .. itoa(have) .. ', registration asked for ngpio ' .. itoa(ngpio))
  end
  local t = m[3] or '0'
  local e = tonumber(m[4] or '0')
  if t ~= '0' and e > now then
    fail('FAILED_PRECONDITION', 'chip ' .. id .. ' is leased by ' .. (m[2] or '') .. ' until ' .. iso(e) .. ' (expires in ' .. itoa(e - now) .. ' ms)')
  end
  if t ~= '0' and (m[2] or '') ~= owner then tookOver = 1 end
else
  redis.call('HSET', key, 'n', itoa(ngpio), 's', '0', 'ts', '0')
  redis.call('SADD', K_CHIPS, id)
end
if nnames > 0 then
  redis.call('DEL', knm(id))
  for i = 0, nnames - 1 do
    local name = ARGV[8 + i]
    if name ~= '' then redis.call('HSET', knm(id), name, itoa(i)) end
  end
end
local token = redis.call('HINCRBY', key, 'f', 1)
redis.call('HSET', key, 't', itoa(token), 'o', owner, 'e', itoa(now + ttl), 'l', itoa(ttl))
local restored = 0
if exists then restored = 1 end
return { itoa(token), restored, tookOver, chip_lines_dump(id) }
