# xtask: skip=needs pcache-mkfs and pcache-ublk (not implemented yet)
# Plan (as a directory case): boot1.sh formats with pcache-mkfs and writes
# known data through pcache-ublk, stops the daemon leaving data dirty;
# boot2.sh attaches the kernel's dm-pcache to the same pmem and checks the data
# (the kernel must accept our image and replay our keys).
