# xtask: timeout=120
xt_log "a passing guest"
