-- drive. ARGV: 3 'line' | 'net', line: 4 chip, 5 kind, 6 value, 7 drive; net: 4 name, 5 drive.
-- Returns the target's level after the change.
if ARGV[3] == 'net' then
  local name, x = ARGV[4], tonumber(ARGV[5])
  local n = net(name)
  if not n then fail('NOT_FOUND', 'net ' .. name .. ' does not exist') end
  n.x = x
  n.dirty = true
  local refs = {}
  for i, m in ipairs(n.m) do refs[i] = line(m[1], m[2]) end
  settle(refs)
  finish()
  return n.v
end
local l = resolve_line(ARGV[4], ARGV[5], ARGV[6])
l.x = tonumber(ARGV[7])
l.dirty = true
settle({ l })
finish()
return l.v
