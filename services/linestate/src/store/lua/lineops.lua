-- lineOps: batches of operations, each on one chip under one lease, applied in order (the
-- store puts the batches that are ready together in one script).
-- ARGV: 3 g (number of batches), then per batch: chip, token, n, then n x (op, offset, value).
-- A stale lease or unknown chip fails its batch (nothing of it is applied); an invalid
-- operation fails alone (it changes nothing) and the others still apply.
-- Returns { per batch, published events ("" = none) }; a batch's entry is { code, message }
-- when it failed as a whole, else { results, the chip's seq after the batch, levels }:
-- results[i] is the response value or { code, message }; levels is one character per
-- operation: its line's level after the batch ("0"/"1"; "-" for a failed operation).
-- A change an operation makes to its own line while the line's irq type is NONE is
-- marked as an echo (lib.lua set_level).

-- fail() raises { err = 'GF:CODE:message' }; inside pcall Redis 7.0 hands it over as that
-- table or as a string (possibly prefixed "user_script:N: "). Anything else is re-raised.
local function caught(r)
  local e = r
  if type(r) == 'table' then e = r.err end
  local code, msg = nil, nil
  if type(e) == 'string' then code, msg = string.match(e, 'GF:([A-Z_]+):(.*)$') end
  if not code then error(r) end
  return { code, msg }
end

local function batch(a)
  local chipid, token, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local ok, c = pcall(leased_chip, chipid, token)
  if not ok then return caught(c) end
  local offs = {}
  for i = 1, n do offs[i] = tonumber(ARGV[a + 2 + (i - 1) * 3 + 2]) or -1 end
  preload(c, offs)
  local results = {}
  for i = 1, n do
    local b = a + 2 + (i - 1) * 3
    echo_key = c.id .. ':' .. ARGV[b + 2]
    local done, r = pcall(line_op, c, tonumber(ARGV[b + 1]), offs[i], tonumber(ARGV[b + 3]), ARGV[b + 3])
    echo_key = nil
    if done then results[i] = r else results[i] = caught(r) end
  end
  local levels = {}
  for i = 1, n do
    if type(results[i]) == 'table' then
      levels[i] = '-'
    else
      levels[i] = itoa(line(c.id, offs[i]).v)
    end
  end
  return { results, c.s, table.concat(levels) }
end

local g = tonumber(ARGV[3])
local out = {}
local a = 4
for k = 1, g do
  out[k] = batch(a)
  a = a + 3 + tonumber(ARGV[a + 2]) * 3
end
return { out, finish() }
