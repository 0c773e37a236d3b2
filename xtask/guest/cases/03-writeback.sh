# xtask: skip=needs pcache-ublk (not implemented yet)
# Plan: write a pattern through /dev/ublkb0, wait until writeback drains
# (dirty_tail == key_head in the daemon's status), stop the daemon, then
# compare $BACKING directly with the pattern (dd iflag=direct | md5sum).
