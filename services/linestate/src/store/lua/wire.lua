-- wire. ARGV: 3 name ('' = generate), 4 pull, 5 drive mode, 6 member count, then per member: chip, kind ('o'|'n'), value
-- Returns net_dump.
local name, pull, mode, count = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ms = {}
for i = 0, count - 1 do
  ms[#ms + 1] = resolve_line(ARGV[7 + i * 3], ARGV[8 + i * 3], ARGV[9 + i * 3])
end
local seen = {}
for _, l in ipairs(ms) do
  if seen[l.key] then fail('INVALID_ARGUMENT', 'line ' .. l.key .. ' is listed twice') end
  seen[l.key] = true
  local cur = lnet(l)
  if cur ~= '' then fail('ALREADY_EXISTS', 'line ' .. l.key .. ' is already in net ' .. cur) end
end
if name ~= '' and redis.call('SISMEMBER', K_NETS, name) == 1 then fail('ALREADY_EXISTS', 'net ' .. name .. ' already exists') end
if name == '' then
  repeat
    name = 'net-' .. itoa(redis.call('INCR', K_NETSEQ))
  until redis.call('SISMEMBER', K_NETS, name) == 0
end
local keys = {}
local lnset = {}
for i, l in ipairs(ms) do
  keys[i] = l.key
  l.net = name
  lnset[#lnset + 1] = l.key
  lnset[#lnset + 1] = name
end
local n = { name = name, ms = table.concat(keys, ' '), m = {}, p = pull, d = mode, x = 0, v = 0, c = 0, k = 0, dirty = true }
for i, l in ipairs(ms) do n.m[i] = { l.chip, l.off } end
nets[name] = n
redis.call('SADD', K_NETS, name)
redis.call('HSET', K_LN, unpack(lnset))
settle(ms)
finish()
return net_dump(n)
