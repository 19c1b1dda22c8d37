-- lineOps: a batch of operations on one chip under one lease, applied in order.
-- ARGV: 3 chip, 4 token, 5 n, then n x (op, offset, value).
-- A stale lease or unknown chip fails the whole batch; an invalid operation fails alone
-- (it changes nothing) and the others still apply.
-- Returns { results, published events ("" = none), the chip's seq after the batch, levels };
-- results[i] is the response value or { code, message }; levels is one character per
-- operation: its line's level after the batch ("0"/"1"; "-" for a failed operation).
-- A change an operation makes to its own line while the line's irq type is NONE is
-- marked as an echo (lib.lua set_level).
local c = leased_chip(ARGV[3], ARGV[4])
local n = tonumber(ARGV[5])
local offs = {}
for i = 1, n do offs[i] = tonumber(ARGV[5 + (i - 1) * 3 + 2]) or -1 end
preload(c, offs)
local results = {}
for i = 1, n do
  local b = 5 + (i - 1) * 3
  local off = tonumber(ARGV[b + 2])
  echo_key = c.id .. ':' .. ARGV[b + 2]
  local ok, r = pcall(line_op, c, tonumber(ARGV[b + 1]), off, tonumber(ARGV[b + 3]), ARGV[b + 3])
  echo_key = nil
  if ok then
    results[i] = r
  else
    -- fail() raises { err = 'GF:CODE:message' }; inside pcall Redis 7.0 hands it over
    -- as that table or as a string (possibly prefixed "user_script:N: ")
    local e = r
    if type(r) == 'table' then e = r.err end
    local code, msg = nil, nil
    if type(e) == 'string' then code, msg = string.match(e, 'GF:([A-Z_]+):(.*)$') end
    if not code then error(r) end
    results[i] = { code, msg }
  end
end
local levels = {}
for i = 1, n do
  if type(results[i]) == 'table' then
    levels[i] = '-'
  else
    levels[i] = itoa(line(c.id, tonumber(ARGV[5 + (i - 1) * 3 + 2])).v)
  end
end
local msg = finish()
return { results, msg, c.s, table.concat(levels) }
