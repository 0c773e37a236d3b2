# xtask: quick timeout=120
# The ublk driver loads and /dev/ublk-control appears. Notes which of our
# binaries in the payload are usable yet (later cases SKIP without them).
modprobe ublk_drv || xt_fail "modprobe ublk_drv"
xt_wait_dev /dev/ublk-control || xt_fail "no /dev/ublk-control"
[ -c /dev/ublk-control ] || xt_fail "/dev/ublk-control is not a character device"
ls -l /dev/ublk-control
grep -q '^ublk_drv ' /proc/modules || xt_fail "ublk_drv is not in /proc/modules"
for b in pcache-mkfs pcache-fsck pcache-dump pcache-replay pcache-ublk; do
    if xt_have "$b"; then xt_log "$b: usable"; else xt_log "$b: $(xt_why_not "$b")"; fi
done
