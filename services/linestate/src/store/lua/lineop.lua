-- lineOp. ARGV: 3 chip, 4 token, 5 op, 6 offset, 7 value.
-- Returns { response value, published events ("" = none) }.
local c = leased_chip(ARGV[3], ARGV[4])
local v = line_op(c, tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[7])
return { v, finish() }
