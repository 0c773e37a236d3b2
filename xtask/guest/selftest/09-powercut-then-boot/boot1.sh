# xtask: timeout=120
echo before >"$OUT/x"
xt_powercut
