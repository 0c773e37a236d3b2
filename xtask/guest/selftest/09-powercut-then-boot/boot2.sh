[ "$(cat "$OUT/x")" = before ] || xt_fail "the 9p hand-off did not survive the power cut"
xt_log "boot 2 after the power cut"
