# xtask: quick timeout=120
# The ublk driver loads and /dev/ublk-control appears. Notes whether the
# payload's pcache-ublk is usable yet (later cases use it when it is).
modprobe ublk_drv || xt_fail "modprobe ublk_drv"
xt_wait_dev /dev/ublk-control || xt_fail "no /dev/ublk-control"
[ -c /dev/ublk-control ] || xt_fail "/dev/ublk-control is not a character device"
ls -l /dev/ublk-control
for b in pcache-mkfs pcache-fsck pcache-dump pcache-replay pcache-ublk; do
    if xt_have "$b"; then xt_log "$b: usable"; elif command -v "$b" >/dev/null; then
        xt_log "$b: present, --help fails (stub?)"; else xt_log "$b: not in the payload"; fi
done
