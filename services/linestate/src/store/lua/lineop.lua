-- lineOp. ARGV: 3 chip, 4 token, 5 op, 6 offset, 7 value. Returns the response value.
local id, token, op, off, value = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local c = must_chip(id)
local t = redis.call('HGET', kc(id), 't') or '0'
if t == '0' then fail('FAILED_PRECONDITION', 'stale lease token ' .. token .. ', chip ' .. id .. ' has no lease') end
if t ~= token then fail('FAILED_PRECONDITION', 'stale lease token ' .. token .. ', current ' .. t) end
check_offset(c, off)
local l = line(id, off)
if op == 2 then return l.d end
if op == 4 then return l.v end
if op == 3 then
  if value ~= 0 and value ~= 1 and value ~= 2 then
    fail('INVALID_ARGUMENT', 'direction ' .. ARGV[7] .. ' is not one of 0 (none), 1 (out), 2 (in)')
  end
  l.d = value
  if value == 0 then
    l.o = 0
    l.i = 0
  end
elseif op == 5 then
  if value ~= 0 and value ~= 1 then fail('INVALID_ARGUMENT', 'value ' .. ARGV[7] .. ' is not 0 or 1') end
  l.o = value
elseif op == 6 then
  if value ~= 0 and value ~= 1 and value ~= 2 and value ~= 3 and value ~= 4 and value ~= 8 then
    fail('INVALID_ARGUMENT', 'irq type ' .. ARGV[7] .. ' is not one of 0, 1, 2, 3, 4, 8')
  end
  l.i = value
else
  fail('INVALID_ARGUMENT', 'unknown line operation ' .. ARGV[5])
end
l.dirty = true
settle({ l })
finish()
return 0
