# xtask: skip=needs pcache-ublk (not implemented yet)
# Plan: pcache-ublk and pcache-fsck on damaged images (host0.sh corrupts
# pmem0.img: bad superblock CRC, seg_num too large, kset overrunning its
# segment, a cycle in the kset chain) must refuse cleanly: no crash, no
# hang, clear errors; the kernel must refuse the same images too.
