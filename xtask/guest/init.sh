#!/bin/sh
# PID 1 of the qemu-test guest (xtask/guest/init.sh; shipped in each run's payload).
# Kernel command-line words key=value arrive here as environment variables:
#   xt_case=NAME xt_boot=N xt_nboots=M   run /xtask/cases/NAME/bootN.sh
#   xt_share=TAG      9p tag of the case's host directory, mounted at /mnt/host ($OUT)
#   xt_shell=1        set up, then an interactive shell instead of the case (--shell)
#   xt_mode=template  convert the NVDIMM namespace to fsdax (builds the pmem template)
# The result goes back through isa-debug-exit (QEMU exits (rc<<1)|1) and the
# serial line XTASK_RC=<rc>. See docs/qemu.md.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
. /xtask/lib.sh
echo "XT: init: case=${xt_case:-none} boot=${xt_boot:-1}/${xt_nboots:-1} uptime=$(xt_uptime)"

xt_mount_share
xt_setup
rc=$?
if [ -n "$xt_shell" ]; then
    xt_shell
    rc=0
elif [ "$rc" = 0 ] && [ "$xt_mode" != template ]; then
    s=/xtask/cases/$xt_case/boot${xt_boot:-1}.sh
    if [ -f "$s" ]; then
        echo "XT: running $s"
        (cd /tmp && . "$s")
        rc=$?
        [ "$rc" = 0 ] && { xt_check_dmesg || rc=1; }
    else
        echo "FAIL: no script $s"
        rc=127
    fi
fi
xt_report "$rc"
