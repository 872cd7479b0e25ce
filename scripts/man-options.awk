# The OPTIONS of luasmtpd(8), made from `luasmtpd --help` at build time
# (the Makefile), so that the man page and --help cannot disagree: each
# "  --name ARG   text" line, and the indented lines that go on with it,
# becomes a roff .TP paragraph.
function roff(s) {
    gsub(/\\/, "\\e", s)
    gsub(/-/, "\\-", s)
    if (s ~ /^[.']/) s = "\\&" s
    return s
}
/^Options:/ { on = 1; next }
/^Signals:/ { on = 0 }
on && /^  -/ {
    line = substr($0, 3)
    head = line; text = ""
    if (match(line, /  +/)) { head = substr(line, 1, RSTART - 1); text = substr(line, RSTART + RLENGTH) }
    printf ".TP\n.B %s\n", roff(head)
    if (text != "") print roff(text)
    next
}
on && /^                            / { sub(/^ +/, ""); print roff($0); next }
on && /^  [A-Z]/ { sub(/^ +/, ""); printf ".PP\n%s\n", roff($0) }
