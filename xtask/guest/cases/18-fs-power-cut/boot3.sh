# Boot 3: XFS after the power cut.
modprobe ext4; modprobe xfs
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
mkdir -p /mnt/fs
mount -t xfs "$UBLK_DEV" /mnt/fs || xt_fail "mount xfs after the power cut (log recovery)"
umount /mnt/fs || xt_fail "umount"
/usr/sbin/xfs_repair -n "$UBLK_DEV" >"$OUT/xfs_repair.txt" 2>&1
rc=$?
tail -20 "$OUT/xfs_repair.txt"
[ "$rc" = 0 ] || xt_fail "xfs_repair -n exited $rc after the power cut"
mount -t xfs -o ro "$UBLK_DEV" /mnt/fs || xt_fail "mount xfs read-only"
xt_fs_verify /mnt/fs "$OUT/xfs-done.txt"
umount /mnt/fs
xt_ublk_del
xt_log "ext4: $(wc -l <"$OUT/ext4-done.txt") and XFS: $(wc -l <"$OUT/xfs-done.txt") synced files survived their power cuts"
if xt_have pcache-fsck; then
    pcache-fsck "$PMEM" || xt_fail "pcache-fsck after the power cuts"
fi
