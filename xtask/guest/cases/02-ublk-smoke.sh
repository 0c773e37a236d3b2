# xtask: skip=needs pcache-ublk (not implemented yet)
# Plan: pcache-mkfs $PMEM; pcache-ublk serves $PMEM + $BACKING as /dev/ublkb0;
# fio write+verify through it (as 00-kernel-smoke does through dm-pcache);
# stop the daemon; start it again on the same cache; verify_only.
# Start with: xt_need pcache-mkfs pcache-ublk
