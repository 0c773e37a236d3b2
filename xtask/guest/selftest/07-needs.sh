# xtask: expect=skip needs=pcache-nonexistent
# Skipped on the host, without a boot.
xt_fail "booted anyway"
