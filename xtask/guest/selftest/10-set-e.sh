# xtask: timeout=120 expect=fail
# A failing command under set -e.
set -e
false
xt_log "not reached"
