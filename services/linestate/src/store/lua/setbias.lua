-- setBias. ARGV: 3 chip, 4 kind, 5 value, 6 bias. Returns {line_dump, name}.
local l = resolve_line(ARGV[3], ARGV[4], ARGV[5])
l.b = tonumber(ARGV[6])
l.dirty = true
settle({ l })
finish()
return { line_dump(l), line_name(l) }
