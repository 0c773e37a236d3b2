# Boot 2: ext4 after the power cut, then XFS with data CRCs and a second power cut.
modprobe ext4; modprobe xfs
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
mkdir -p /mnt/fs
mount -t ext4 "$UBLK_DEV" /mnt/fs || xt_fail "mount ext4 after the power cut (journal replay)"
umount /mnt/fs || xt_fail "umount"
/usr/sbin/e2fsck -fn "$UBLK_DEV" >"$OUT/e2fsck.txt" 2>&1
rc=$?
cat "$OUT/e2fsck.txt"
[ "$rc" = 0 ] || xt_fail "e2fsck -fn exited $rc after the power cut"
mount -t ext4 -o ro "$UBLK_DEV" /mnt/fs || xt_fail "mount ext4 read-only"
xt_fs_verify /mnt/fs "$OUT/ext4-done.txt"
umount /mnt/fs
xt_ublk_del

xt_log "XFS on a cache with data CRCs"
pcache-mkfs --force --quiet --data-crc "$PMEM" || xt_fail "pcache-mkfs --data-crc"
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
/usr/sbin/mkfs.xfs -f -q "$UBLK_DEV" || xt_fail "mkfs.xfs on $UBLK_DEV"
mount -t xfs "$UBLK_DEV" /mnt/fs || xt_fail "mount xfs"
: >"$OUT/xfs-done.txt"
xt_fs_load /mnt/fs "$OUT/xfs-done.txt" 100000 >/tmp/load.log 2>&1 &
xt_fs_wait "$OUT/xfs-done.txt" 160 600
xt_log "$(wc -l <"$OUT/xfs-done.txt") files synced on XFS"
xt_powercut
