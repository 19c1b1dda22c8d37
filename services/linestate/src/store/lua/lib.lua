-- Shared prelude of every line-store script (prepended by redis-store.ts).
--
-- Calling convention: KEYS[1] = <prefix>chips (routes the call to the fabric's slot),
-- ARGV[1] = key prefix "gf:{<fabric>}:", ARGV[2] = per-chip event retention,
-- ARGV[3..] = the script's own arguments. Every key a script touches starts with the
-- prefix, so all of a fabric's keys share one hash tag (one Redis Cluster slot).
--
-- Layout (see keys.ts):
--   <p>chips          SET   chip ids
--   <p>c:<chip>       HASH  n ngpio, o owner, t lease token (0 = none), f fencing counter,
--                           e lease expiry ms, l lease ttl ms, s last event seq, ts last event ns,
--                           "<offset>" packed line state (absent = default "000000")
--   <p>nm:<chip>      HASH  line name -> offset (non-empty names only)
--   <p>nets           SET   net names
--   <p>n:<net>        HASH  m members "chip:off chip:off ...", p pull, d drive mode,
--                           x external drive, v level, c contention 0/1, k contention count
--   <p>ln             HASH  "chip:off" -> net name (wired lines only)
--   <p>netseq         STRING counter for generated net names
--   <p>ev:<chip>      STREAM events, id 0-<seq>, fields level edge offset ts [echo 1]
--   channel <p>events:<chip>  the chip's events of one state change: "chip off level edge
--                     seq ts[ e]" lines (" e" / echo 1: an OpStream operation's echo)
--   channel <p>events  all events of one state change, in the same format: published only
--                     while a replica from before per-chip channels subscribes to it
--
-- Packed line state: 6 characters, direction (0 none, 1 out, 2 in), output value (0/1),
-- irq type (0,1,2,3,4,8), bias (0 none, 1 up, 2 down), external drive (0 release,
-- 1 low, 2 high), observed level (0/1).
--
-- Errors: error({err = "GF:<CODE>:<message>"}) aborts the script. Every script validates
-- everything before its first write, so an error never leaves a partial change.

local P = ARGV[1]
local RETENTION = tonumber(ARGV[2])
local K_CHIPS = P .. 'chips'
local K_NETS = P .. 'nets'
local K_LN = P .. 'ln'
local K_NETSEQ = P .. 'netseq'
local K_CHAN = P .. 'events'
local function kc(chip) return P .. 'c:' .. chip end
local function knm(chip) return P .. 'nm:' .. chip end
local function kn(net) return P .. 'n:' .. net end
local function kev(chip) return P .. 'ev:' .. chip end

local DEFAULT_LINE = '000000'

local function fail(code, msg)
  error({ err = 'GF:' .. code .. ':' .. msg })
end

-- the line state's digits (and small offsets) without string.format, which costs about
-- 0.2 µs a call and ran about ten times per changed line
local DIGITS = { [0] = '0', '1', '2', '3', '4', '5', '6', '7', '8', '9' }
local function itoa(n)
  return DIGITS[n] or string.format('%d', n)
end

-- ------------------------------------------------------------------ time
local T = nil
local function time()
  if not T then T = redis.call('TIME') end
  return T
end
local function now_ms()
  local t = time()
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- ns since the epoch as a decimal string (doubles cannot hold it exactly)
local NOW_NS = nil
local function now_ns()
  if not NOW_NS then
    local t = time()
    NOW_NS = t[1] .. string.format('%06d', tonumber(t[2])) .. '000'
  end
  return NOW_NS
end
-- compare two non-negative decimal strings
local function dec_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

-- ISO-8601 UTC of epoch ms (civil-from-days)
local function iso(ms)
  local s = math.floor(ms / 1000)
  local msr = ms - s * 1000
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m
  if mp < 10 then m = mp + 3 else m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d, math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, msr)
end

-- ------------------------------------------------------------------ chips
local chips = {}
-- chip meta cache: nil when the chip does not exist
local function chip(id)
  local c = chips[id]
  if c ~= nil then
    if c == false then return nil end
    return c
  end
  local m = redis.call('HMGET', kc(id), 'n', 's', 'ts', 't')
  if not m[1] then
    chips[id] = false
    return nil
  end
  -- t: the lease token as read (leased_chip); writers of 't' do not use this cache
  c = { id = id, n = tonumber(m[1]), s = tonumber(m[2] or '0'), ts = m[3] or '0', t = m[4] or '0', dirty = false }
  chips[id] = c
  return c
end
local function new_chip(id, ngpio)
  local c = { id = id, n = ngpio, s = 0, ts = '0', dirty = false }
  chips[id] = c
  return c
end
local function must_chip(id)
  local c = chip(id)
  if not c then fail('NOT_FOUND', 'chip ' .. id .. ' does not exist') end
  return c
end

-- ------------------------------------------------------------------ lines
local lines = {}
-- a cached line from its packed state (false/nil = default)
local function new_line(chipid, off, k, s)
  local d, o, i, b, x, v = string.byte(s or DEFAULT_LINE, 1, 6)
  local l = { chip = chipid, off = off, key = k, d = d - 48, o = o - 48, i = i - 48, b = b - 48, x = x - 48, v = v - 48, net = nil, dirty = false }
  lines[k] = l
  return l
end
local function line(chipid, off)
  local k = chipid .. ':' .. off
  local l = lines[k]
  if l then return l end
  return new_line(chipid, off, k, redis.call('HGET', kc(chipid), itoa(off)))
end
-- cache the lines at `offs` of chip c (valid offsets only) and their nets: two HMGETs
-- instead of two HGETs per line (lineops: a batch's lines)
local function preload(c, offs)
  local fields, keys, seen = {}, {}, {}
  for _, off in ipairs(offs) do
    if off ~= nil and off >= 0 and off < c.n and off == math.floor(off) then
      local k = c.id .. ':' .. off
      if not lines[k] and not seen[k] then
        seen[k] = true
        fields[#fields + 1] = itoa(off)
        keys[#keys + 1] = k
      end
    end
  end
  if #fields == 0 then return end
  local s = redis.call('HMGET', kc(c.id), unpack(fields))
  local nn = redis.call('HMGET', K_LN, unpack(keys))
  for j, k in ipairs(keys) do
    new_line(c.id, tonumber(fields[j]), k, s[j]).net = nn[j] or ''
  end
end
local function packed(l)
  return itoa(l.d) .. itoa(l.o) .. itoa(l.i) .. itoa(l.b) .. itoa(l.x) .. itoa(l.v)
end
local function lnet(l)
  if l.net == nil then
    l.net = redis.call('HGET', K_LN, l.key) or ''
  end
  return l.net
end

-- check an offset against a chip (INVALID_ARGUMENT when out of range)
local function check_offset(c, off)
  if off == nil or off < 0 or off >= c.n or off ~= math.floor(off) then
    fail('INVALID_ARGUMENT', 'offset ' .. tostring(off) .. ' is out of range for chip ' .. c.id .. ' (0..' .. itoa(c.n - 1) .. ')')
  end
end

-- resolve a line selector (kind 'o' offset / 'n' name) of an existing chip
local function resolve_line(chipid, kind, v)
  local c = must_chip(chipid)
  local off
  if kind == 'o' then
    off = tonumber(v)
    check_offset(c, off)
  else
    local s = redis.call('HGET', knm(chipid), v)
    if not s then fail('NOT_FOUND', 'chip ' .. chipid .. ' has no line named ' .. v) end
    off = tonumber(s)
  end
  return line(chipid, off)
end

-- ------------------------------------------------------------------ nets
local nets = {}
local function parse_members(s)
  local ms = {}
  for tok in string.gmatch(s, '%S+') do
    local i = string.find(tok, ':[^:]*$')
    ms[#ms + 1] = { tok:sub(1, i - 1), tonumber(tok:sub(i + 1)) }
  end
  return ms
end
local function net(name)
  local n = nets[name]
  if n ~= nil then
    if n == false then return nil end
    return n
  end
  local m = redis.call('HMGET', kn(name), 'm', 'p', 'd', 'x', 'v', 'c', 'k')
  if not m[1] then
    nets[name] = false
    return nil
  end
  n = {
    name = name, ms = m[1], m = parse_members(m[1]), p = tonumber(m[2]), d = tonumber(m[3]), x = tonumber(m[4]),
    v = tonumber(m[5]), c = tonumber(m[6]), k = tonumber(m[7]), dirty = false,
  }
  nets[name] = n
  return n
end
local function net_dump(n)
  return { n.name, n.ms, n.p, n.d, n.v, n.x, n.c, n.k }
end

-- ------------------------------------------------------------------ resolution
local function drive_level(x)
  if x == 2 then return 1 elseif x == 1 then return 0 end
  return nil
end
-- same rule as resolveNet in services/common/src/line-model.ts
local function resolve_net(drivers, pull, mode)
  if #drivers == 0 then
    if pull == 1 then return 1, false end
    return 0, false
  end
  local zeros, ones = 0, 0
  for _, d in ipairs(drivers) do
    if d == 0 then zeros = zeros + 1 else ones = ones + 1 end
  end
  if mode == 1 then
    if zeros > 0 then return 0, false end
    return 1, false
  end
  if zeros > 0 and ones > 0 then return 0, true end
  if ones > 0 then return 1, false end
  return 0, false
end

local events = {}
-- "chip:offset" of the line the current OpStream operation acts on (lineops.lua sets it):
-- a change of that line while its irq type is NONE is that operation's echo, marked so
-- watchers with omit_echoes can leave it out (docs/line-model.md, "Echoes")
local echo_key = nil
local function set_level(l, v)
  if l.v == v then return end
  local edge = 2
  if v == 1 then edge = 1 end
  l.v = v
  l.dirty = true
  local c = chip(l.chip)
  c.s = c.s + 1
  local ts = now_ns()
  if dec_less(ts, c.ts) then ts = c.ts end
  c.ts = ts
  c.dirty = true
  local echo = false
  if l.key == echo_key and l.i == 0 then echo = true end
  events[#events + 1] = { l.chip, l.off, v, edge, c.s, ts, echo }
end

-- re-resolve the given lines (and every line sharing a net with them)
local function settle(refs)
  if #refs == 1 and lnet(refs[1]) == '' then
    -- one unwired line (the common case): resolve_net's rule without its tables
    local l = refs[1]
    local a, b = nil, drive_level(l.x)
    if l.d == 1 then a = l.o end
    if a == nil and b == nil then
      if l.b == 1 then set_level(l, 1) else set_level(l, 0) end
    elseif a == nil then
      set_level(l, b)
    elseif b == nil or a == b then
      set_level(l, a)
    else
      set_level(l, 0) -- an output and an external drive that disagree: push-pull contention reads low
    end
    return
  end
  local netset, netorder, seen, singles = {}, {}, {}, {}
  for _, l in ipairs(refs) do
    local nn = lnet(l)
    if nn ~= '' then
      if not netset[nn] then
        netset[nn] = true
        netorder[#netorder + 1] = nn
      end
    elseif not seen[l.key] then
      seen[l.key] = true
      singles[#singles + 1] = l
    end
  end
  table.sort(netorder)
  for _, name in ipairs(netorder) do
    local n = net(name)
    local drivers = {}
    local nd = drive_level(n.x)
    if nd ~= nil then drivers[#drivers + 1] = nd end
    local ml = {}
    for _, m in ipairs(n.m) do
      local l = line(m[1], m[2])
      ml[#ml + 1] = l
      if l.d == 1 then drivers[#drivers + 1] = l.o end
      local ld = drive_level(l.x)
      if ld ~= nil then drivers[#drivers + 1] = ld end
    end
    local v, con = resolve_net(drivers, n.p, n.d)
    if con and n.c == 0 then n.k = n.k + 1 end
    if con then n.c = 1 else n.c = 0 end
    n.v = v
    n.dirty = true
    for _, l in ipairs(ml) do set_level(l, v) end
  end
  for _, l in ipairs(singles) do
    local drivers = {}
    if l.d == 1 then drivers[#drivers + 1] = l.o end
    local ld = drive_level(l.x)
    if ld ~= nil then drivers[#drivers + 1] = ld end
    local v = resolve_net(drivers, l.b, 0)
    set_level(l, v)
  end
end

-- ------------------------------------------------------------------ line operations
-- the chip of an agent's operation, checked against the caller's lease token
local function leased_chip(id, token)
  local c = must_chip(id)
  local t = c.t
  if t == '0' then fail('FAILED_PRECONDITION', 'stale lease token ' .. token .. ', chip ' .. id .. ' has no lease') end
  if t ~= token then fail('FAILED_PRECONDITION', 'stale lease token ' .. token .. ', current ' .. t) end
  return c
end

-- one virtio-gpio line operation (op = LineOpType number); validates before it changes
-- anything, so a failing operation leaves the state as it was. Returns the response value.
local function line_op(c, op, off, value, value_text)
  check_offset(c, off)
  local l = line(c.id, off)
  if op == 2 then return l.d end
  if op == 4 then return l.v end
  if op == 3 then
    if value ~= 0 and value ~= 1 and value ~= 2 then
      fail('INVALID_ARGUMENT', 'direction ' .. value_text .. ' is not one of 0 (none), 1 (out), 2 (in)')
    end
    l.d = value
    if value == 0 then
      l.o = 0
      l.i = 0
    end
  elseif op == 5 then
    if value ~= 0 and value ~= 1 then fail('INVALID_ARGUMENT', 'value ' .. value_text .. ' is not 0 or 1') end
    l.o = value
  elseif op == 6 then
    if value ~= 0 and value ~= 1 and value ~= 2 and value ~= 3 and value ~= 4 and value ~= 8 then
      fail('INVALID_ARGUMENT', 'irq type ' .. value_text .. ' is not one of 0, 1, 2, 3, 4, 8')
    end
    l.i = value
  else
    fail('INVALID_ARGUMENT', 'unknown line operation ' .. tostring(op))
  end
  l.dirty = true
  settle({ l })
  return 0
end

-- write every cached change, append and publish the events; returns the messages published
-- on the chips' channels, separated by an empty line ("" when nothing changed), which the
-- caller also gets (same-replica delivery)
local function finish()
  local perchip = {}
  local order = {}
  for _, l in pairs(lines) do
    if l.dirty then
      local t = perchip[l.chip]
      if not t then
        t = { set = {}, del = {} }
        perchip[l.chip] = t
        order[#order + 1] = l.chip
      end
      local s = packed(l)
      if s == DEFAULT_LINE then
        t.del[#t.del + 1] = itoa(l.off)
      else
        t.set[#t.set + 1] = itoa(l.off)
        t.set[#t.set + 1] = s
      end
    end
  end
  for _, id in ipairs(order) do
    local t = perchip[id]
    local k = kc(id)
    local i = 1
    while i <= #t.set do
      local j = math.min(i + 999, #t.set)
      redis.call('HSET', k, unpack(t.set, i, j))
      i = j + 1
    end
    i = 1
    while i <= #t.del do
      local j = math.min(i + 999, #t.del)
      redis.call('HDEL', k, unpack(t.del, i, j))
      i = j + 1
    end
  end
  for id, c in pairs(chips) do
    if c and c.dirty then redis.call('HSET', kc(id), 's', itoa(c.s), 'ts', c.ts) end
  end
  for name, n in pairs(nets) do
    if n and n.dirty then
      redis.call('HSET', kn(name), 'v', itoa(n.v), 'c', itoa(n.c), 'k', itoa(n.k), 'x', itoa(n.x), 'p', itoa(n.p), 'd', itoa(n.d), 'm', n.ms)
    end
  end
  if #events > 0 then
    local bychip, corder = {}, {}
    for _, e in ipairs(events) do
      local off, level, edge, seq = itoa(e[2]), itoa(e[3]), itoa(e[4]), itoa(e[5])
      local row = e[1] .. ' ' .. off .. ' ' .. level .. ' ' .. edge .. ' ' .. seq .. ' ' .. e[6]
      if e[7] then
        redis.call('XADD', kev(e[1]), 'MAXLEN', '~', RETENTION, '0-' .. seq, 'level', level, 'edge', edge, 'offset', off, 'ts', e[6], 'echo', '1')
        row = row .. ' e'
      else
        redis.call('XADD', kev(e[1]), 'MAXLEN', '~', RETENTION, '0-' .. seq, 'level', level, 'edge', edge, 'offset', off, 'ts', e[6])
      end
      local t = bychip[e[1]]
      if not t then
        t = {}
        bychip[e[1]] = t
        corder[#corder + 1] = e[1]
      end
      t[#t + 1] = row
    end
    local parts = {}
    for i, id in ipairs(corder) do
      local text = table.concat(bychip[id], '\n')
      redis.call('PUBLISH', K_CHAN .. ':' .. id, text)
      parts[i] = text
    end
    -- a replica from before per-chip channels listens on the fabric's channel only (it
    -- orders events per chip, so the chips' rows one after the other will do)
    if redis.call('PUBSUB', 'NUMSUB', K_CHAN)[2] > 0 then redis.call('PUBLISH', K_CHAN, table.concat(parts, '\n')) end
    return table.concat(parts, '\n\n')
  end
  return ''
end

-- ------------------------------------------------------------------ dumps
-- names of a chip as a 0-based array (missing = '')
local function names_of(id, ngpio)
  local flat = redis.call('HGETALL', knm(id))
  local names = {}
  for i = 1, #flat, 2 do names[tonumber(flat[i + 1])] = flat[i] end
  return names
end

-- {id, ngpio, owner, online, expires, seq, token, {name, off, ...}}
local function chip_dump(id)
  local m = redis.call('HMGET', kc(id), 'n', 'o', 't', 'e', 's')
  local t = m[3] or '0'
  local e = tonumber(m[4] or '0')
  local online = 0
  if t ~= '0' and e > now_ms() then online = 1 end
  local nm = redis.call('HGETALL', knm(id))
  return { id, tonumber(m[1]), m[2] or '', online, e, m[5] or '0', t, nm }
end

-- chip dump plus packed lines (ngpio*6 chars) and one net name per line
local function chip_lines_dump(id)
  local d = chip_dump(id)
  local ngpio = d[2]
  local flat = redis.call('HGETALL', kc(id))
  local st = {}
  for i = 1, #flat, 2 do st[flat[i]] = flat[i + 1] end
  local parts = {}
  local fields = {}
  for off = 0, ngpio - 1 do
    local k = itoa(off)
    local l = lines[id .. ':' .. k]
    if l then parts[off + 1] = packed(l) else parts[off + 1] = st[k] or DEFAULT_LINE end
    fields[off + 1] = id .. ':' .. k
  end
  local netsOf = {}
  local i = 1
  while i <= #fields do
    local j = math.min(i + 999, #fields)
    local r = redis.call('HMGET', K_LN, unpack(fields, i, j))
    for x = 1, #r do netsOf[i + x - 1] = r[x] or '' end
    i = j + 1
  end
  d[#d + 1] = table.concat(parts)
  d[#d + 1] = netsOf
  return d
end

local function line_dump(l)
  return { l.chip, l.off, packed(l), lnet(l) }
end

-- the name of one line ('' when unnamed)
local function line_name(l)
  local nm = redis.call('HGETALL', knm(l.chip))
  for i = 1, #nm, 2 do
    if tonumber(nm[i + 1]) == l.off then return nm[i] end
  end
  return ''
end
