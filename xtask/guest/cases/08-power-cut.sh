# xtask: skip=needs pcache-ublk (not implemented yet)
# Plan (as a directory case): boot1.sh runs fio through pcache-ublk with
# verify_state_save and cuts the power mid-write: `(sleep 3; xt_powercut) &`
# (QEMU exits at once; rc 100 = intended power cut). host1.sh runs pcache-fsck
# on $PMEM0_IMG. boot2.sh restarts pcache-ublk on the same images: replay must
# succeed and all completed writes must verify.
