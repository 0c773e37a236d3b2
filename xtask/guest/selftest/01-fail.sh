# xtask: timeout=120 expect=fail
xt_fail "a deliberate failure"
