[ "$(cat "$OUT/x")" = hello ] || xt_fail "no hand-off over 9p"
xt_log "host hook fails on purpose"
exit 3
