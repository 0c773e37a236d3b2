# xtask: skip=needs pcache-ublk (not implemented yet)
# Plan: fio through /dev/ublkb0 in the background; kill -9 the daemon mid-I/O;
# recover the device (ublk user recovery) or restart the daemon on the same
# cache; everything fio had completed must verify (verify_only).
