-- Consistent reads. ARGV: 3 mode, then per mode:
--   chips                       -> {chip_dump...}
--   lines <chip|''>             -> {chip_lines_dump...}
--   nets                        -> {net_dump...}
--   line <chip> <kind> <value>  -> {line_dump, name}
--   names <chip>                -> chip_dump
--   some <chip...>              -> {chip_dump or nil per chip} (only the given chips' keys)
--   events <chip> <after> <limit> -> {lastSeq, XRANGE reply}
local mode = ARGV[3]
if mode == 'chips' then
  local ids = redis.call('SMEMBERS', K_CHIPS)
  table.sort(ids)
  local out = {}
  for i, id in ipairs(ids) do out[i] = chip_dump(id) end
  return out
elseif mode == 'lines' then
  local id = ARGV[4]
  if id ~= '' then
    must_chip(id)
    return { chip_lines_dump(id) }
  end
  local ids = redis.call('SMEMBERS', K_CHIPS)
  table.sort(ids)
  local out = {}
  for i, cid in ipairs(ids) do out[i] = chip_lines_dump(cid) end
  return out
elseif mode == 'nets' then
  local names = redis.call('SMEMBERS', K_NETS)
  table.sort(names)
  local out = {}
  for i, name in ipairs(names) do out[i] = net_dump(net(name)) end
  return out
elseif mode == 'line' then
  local l = resolve_line(ARGV[4], ARGV[5], ARGV[6])
  return { line_dump(l), line_name(l) }
elseif mode == 'some' then
  local out = {}
  for i = 4, #ARGV do
    local id = ARGV[i]
    if chip(id) then out[i - 3] = chip_dump(id) else out[i - 3] = false end
  end
  return out
elseif mode == 'names' then
  must_chip(ARGV[4])
  return chip_dump(ARGV[4])
elseif mode == 'events' then
  local id, after, limit = ARGV[4], ARGV[5], tonumber(ARGV[6])
  local c = must_chip(id)
  if dec_less(itoa(c.s), after) then
    fail('OUT_OF_RANGE', 'cursor ' .. after .. ' is ahead of the newest event ' .. itoa(c.s) .. ' of chip ' .. id)
  end
  return { itoa(c.s), redis.call('XRANGE', kev(id), '(0-' .. after, '+', 'COUNT', limit) }
end
fail('INVALID_ARGUMENT', 'unknown read mode ' .. tostring(mode))
