# xtask: timeout=120 expect=skip
xt_skip "a deliberate skip"
