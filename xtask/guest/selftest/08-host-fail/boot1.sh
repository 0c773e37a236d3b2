# xtask: timeout=120 expect=fail
echo hello >"$OUT/x"
