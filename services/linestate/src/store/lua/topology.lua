-- applyTopology. ARGV: 3 dry run ('1' | '0'), 4 the topology as JSON (shape already validated):
--   {chips: [{id, ngpio, names: [..], bias: [[offset, pull], ..]}],
--    nets: [{name, members: [[chip, kind, value], ..], pull, mode}],
--    drives: [{line: [chip, kind, value]} | {net: name}, value]}   (drives: [{t: .., v: value}])
-- Returns the changes as arrays: {kind, ...}.
local dry = ARGV[3] == '1'
local doc = cjson.decode(ARGV[4])

-- ---------------------------------------------------------------- validate
local declared = {}
for _, c in ipairs(doc.chips) do
  declared[c.id] = c
  local cur = chip(c.id)
  if cur and cur.n ~= c.ngpio then
    fail('FAILED_PRECONDITION', 'chip ' .. c.id .. ' exists with ngpio ' .. itoa(cur.n) .. ', the topology declares ngpio ' .. itoa(c.ngpio))
  end
end

local function ref_text(ref)
  return ref[1] .. ':' .. tostring(ref[3])
end
local function future_resolve(ref)
  local id, kind, v = ref[1], ref[2], ref[3]
  local d = declared[id]
  local cur = chip(id)
  if not d and not cur then fail('NOT_FOUND', 'chip ' .. id .. ' does not exist (line ' .. ref_text(ref) .. ')') end
  local ngpio
  if d then ngpio = d.ngpio else ngpio = cur.n end
  if kind == 'o' then
    local off = tonumber(v)
    if off >= ngpio then fail('INVALID_ARGUMENT', 'line ' .. ref_text(ref) .. ': offset out of range 0..' .. itoa(ngpio - 1)) end
    return id, off
  end
  if d and #d.names > 0 then
    for i, name in ipairs(d.names) do
      if name == v then return id, i - 1 end
    end
  elseif cur then
    local s = redis.call('HGET', knm(id), v)
    if s then return id, tonumber(s) end
  end
  fail('NOT_FOUND', 'chip ' .. id .. ' has no line named ' .. v)
end

local netmembers = {}
local owner = {}
for _, n in ipairs(doc.nets) do
  local ms = {}
  for i, ref in ipairs(n.members) do
    local id, off = future_resolve(ref)
    local key = id .. ':' .. itoa(off)
    local prev = owner[key]
    if prev == n.name then fail('INVALID_ARGUMENT', 'net ' .. n.name .. ' lists line ' .. key .. ' twice') end
    if prev then fail('INVALID_ARGUMENT', 'line ' .. key .. ' is in nets ' .. prev .. ' and ' .. n.name) end
    owner[key] = n.name
    ms[i] = { id, off, key }
  end
  netmembers[n.name] = ms
end
local linedrive, linedriveorder, netdrive, netdriveorder = {}, {}, {}, {}
for _, d in ipairs(doc.drives) do
  if d.line then
    local id, off = future_resolve(d.line)
    local key = id .. ':' .. itoa(off)
    if linedrive[key] == nil then linedriveorder[#linedriveorder + 1] = { id, off, key } end
    linedrive[key] = d.v
  else
    if netdrive[d.net] == nil then netdriveorder[#netdriveorder + 1] = d.net end
    netdrive[d.net] = d.v
  end
end

-- ---------------------------------------------------------------- plan
local changes = {}
local curnames = {}
for _, c in ipairs(doc.chips) do
  local cur = chip(c.id)
  if not cur then changes[#changes + 1] = { 'create-chip', c.id, c.ngpio } end
  if #c.names > 0 then
    local have = {}
    if cur then have = names_of(c.id, c.ngpio) end
    local same = true
    for i, name in ipairs(c.names) do
      if (have[i - 1] or '') ~= name then same = false end
    end
    if not same then changes[#changes + 1] = { 'names', c.id } end
  end
  for _, b in ipairs(c.bias) do
    local curb = 0
    if cur then curb = line(c.id, b[1]).b end
    if curb ~= b[2] then changes[#changes + 1] = { 'bias', c.id, b[1], b[2] } end
  end
end
local existing = redis.call('SMEMBERS', K_NETS)
table.sort(existing)
for _, name in ipairs(existing) do
  if not netmembers[name] then changes[#changes + 1] = { 'remove-net', name } end
end
for _, n in ipairs(doc.nets) do
  local ms = netmembers[n.name]
  local keys = {}
  for i, m in ipairs(ms) do keys[i] = m[3] end
  local text = table.concat(keys, ' ')
  local cur = net(n.name)
  if not cur then
    changes[#changes + 1] = { 'wire-net', n.name, text, n.pull, n.mode }
  elseif cur.p ~= n.pull or cur.d ~= n.mode or cur.ms ~= text then
    changes[#changes + 1] = { 'update-net', n.name, text, n.pull, n.mode }
  end
end
for _, r in ipairs(linedriveorder) do
  local v = linedrive[r[3]]
  local curx = 0
  if chip(r[1]) then curx = line(r[1], r[2]).x end
  if curx ~= v then changes[#changes + 1] = { 'drive-line', r[1], r[2], v } end
end
for _, name in ipairs(netdriveorder) do
  local v = netdrive[name]
  local curx = 0
  local cur = net(name)
  if cur then curx = cur.x end
  if curx ~= v then changes[#changes + 1] = { 'drive-net', name, v } end
end
if dry or #changes == 0 then return changes end

-- ---------------------------------------------------------------- apply (nothing below fails)
local touched = {}
for _, c in ipairs(doc.chips) do
  if not chip(c.id) then
    new_chip(c.id, c.ngpio)
    redis.call('HSET', kc(c.id), 'n', itoa(c.ngpio), 's', '0', 'ts', '0')
    redis.call('SADD', K_CHIPS, c.id)
  end
  if #c.names > 0 then
    redis.call('DEL', knm(c.id))
    for i, name in ipairs(c.names) do
      if name ~= '' then redis.call('HSET', knm(c.id), name, itoa(i - 1)) end
    end
  end
  for _, b in ipairs(c.bias) do
    local l = line(c.id, b[1])
    l.b = b[2]
    l.dirty = true
    touched[#touched + 1] = l
  end
end
local old = {}
for _, name in ipairs(existing) do
  local n = net(name)
  local keys = {}
  for i, m in ipairs(n.m) do
    local l = line(m[1], m[2])
    l.net = ''
    keys[i] = l.key
    touched[#touched + 1] = l
  end
  redis.call('HDEL', K_LN, unpack(keys))
  old[name] = n
  nets[name] = false
  redis.call('DEL', kn(name))
end
if #existing > 0 then redis.call('DEL', K_NETS) end
for _, n in ipairs(doc.nets) do
  local ms = netmembers[n.name]
  local o = old[n.name]
  local keys, lnset, m = {}, {}, {}
  for i, mm in ipairs(ms) do
    local l = line(mm[1], mm[2])
    l.net = n.name
    keys[i] = mm[3]
    m[i] = { mm[1], mm[2] }
    lnset[#lnset + 1] = mm[3]
    lnset[#lnset + 1] = n.name
    touched[#touched + 1] = l
  end
  local x, c, k = 0, 0, 0
  if o then x, c, k = o.x, o.c, o.k end
  nets[n.name] = { name = n.name, ms = table.concat(keys, ' '), m = m, p = n.pull, d = n.mode, x = x, v = 0, c = c, k = k, dirty = true }
  redis.call('SADD', K_NETS, n.name)
  redis.call('HSET', K_LN, unpack(lnset))
end
for _, r in ipairs(linedriveorder) do
  local l = line(r[1], r[2])
  l.x = linedrive[r[3]]
  l.dirty = true
  touched[#touched + 1] = l
end
for _, name in ipairs(netdriveorder) do
  nets[name].x = netdrive[name]
  nets[name].dirty = true
end
settle(touched)
finish()
return changes
