# xtask: timeout=1500 pmem_mb=514 backing_mb=2048
# xtask: needs=pcache-mkfs needs=pcache-fsck needs=pcache-ublk:add,del,status
# A real filesystem on top, and the power cut under it (issue 17). Boot 1: ext4 on
# /dev/ublkb0 over the smallest cache (512 MiB), files written and synced until GC has
# run (the cache is full: more than gc_percent of it written), each batch of files
# logged only after `sync` returned; the power is cut in the middle. Boot 2: the cache
# is replayed, the journal replayed by a mount, `e2fsck -fn` finds no error, every
# logged file reads back; then XFS on a cache with data CRCs, the same load, a power
# cut. Boot 3: replay, log recovery by a mount, `xfs_repair -n` finds nothing, every
# logged file reads back; pcache-fsck of the cache is clean.
xt_need pcache-mkfs pcache-fsck
xt_need_sub pcache-ublk add del status
# Full paths: busybox ash runs its own applets (mke2fs) before anything on PATH.
for t in /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/mkfs.xfs /usr/sbin/xfs_repair; do
    [ -x "$t" ] || xt_skip "$t is not in the guest"
done
modprobe ext4; modprobe xfs
pcache-mkfs "$PMEM" || xt_fail "pcache-mkfs"
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
/usr/sbin/mke2fs -t ext4 -F -q "$UBLK_DEV" || xt_fail "mke2fs on $UBLK_DEV"
mkdir -p /mnt/fs
mount -t ext4 "$UBLK_DEV" /mnt/fs || xt_fail "mount ext4"
: >"$OUT/ext4-done.txt"
xt_fs_load /mnt/fs "$OUT/ext4-done.txt" 100000 >/tmp/load.log 2>&1 &
# Until GC has run (the cache is full), and then some more.
i=0
while :; do
    xt_ublk_status
    gc=$(xt_json_val /tmp/xt-status.json gc_runs)
    [ "${gc:-0}" -gt 0 ] && break
    i=$((i + 1))
    [ "$i" -gt 600 ] && { cat /tmp/load.log; xt_fail "GC did not run in 10 min of load"; }
    sleep 1
done
n=$(wc -l <"$OUT/ext4-done.txt")
xt_fs_wait "$OUT/ext4-done.txt" $((n + 40)) 300
xt_log "GC ran ($gc rounds); $(wc -l <"$OUT/ext4-done.txt") files synced"
xt_powercut
