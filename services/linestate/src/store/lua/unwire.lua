-- unwire. ARGV: 3 name.
local name = ARGV[3]
local n = net(name)
if not n then fail('NOT_FOUND', 'net ' .. name .. ' does not exist') end
local refs, keys = {}, {}
for i, m in ipairs(n.m) do
  local l = line(m[1], m[2])
  l.net = ''
  refs[i] = l
  keys[i] = l.key
end
nets[name] = false
redis.call('DEL', kn(name))
redis.call('SREM', K_NETS, name)
redis.call('HDEL', K_LN, unpack(keys))
settle(refs)
finish()
return 0
