# xtask: timeout=120 expect=fail
# A kernel panic: the guest never reports (QEMU exits 0).
echo c >/proc/sysrq-trigger
sleep 30
