# xtask: timeout=600
# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del,status
# pcache -> kernel with dirty data: pcache-mkfs; pcache-ublk writes known
# extents over a backing whose writes fail (dm-flakey error_writes), so they
# stay dirty; `del`. The kernel's dm-pcache opens the same cache over the
# real backing without reformatting, reads back exactly that data, and its
# writeback drains it to the backing.
xt_need pcache-mkfs
xt_need_sub pcache-ublk add del status
pcache-mkfs "$PMEM" || xt_fail "pcache-mkfs $PMEM exited $?"
xt_flakey bk "$BACKING"
xt_ublk_add --cache "$PMEM" --backing /dev/mapper/bk
: >/tmp/expect
for spec in "1 64 8" "2 300 3" "3 1000 1"; do
    set -- $spec
    xt_write_pattern "$UBLK_DEV" "p2k-$1" "$2" "$3"
    echo "p2k-$1 $2 $3" >>/tmp/expect
done
sleep 2
xt_ublk_status
xt_log "pcache-ublk: key_head $UBLK_KEY_HEAD dirty_tail $UBLK_DIRTY_TAIL"
[ "$UBLK_KEY_HEAD" != "$UBLK_DIRTY_TAIL" ] || xt_fail "the cache is clean over a backing whose writes fail"
xt_ublk_del
dmsetup remove bk || xt_fail "dmsetup remove bk (still in use?)"
touch /tmp/xt-allow-kernel-warnings # failing backing writes get logged

set -e
xt_pcache_create pc0 false
dmsetup status pc0 | tee "$OUT/dmsetup-status-activated.txt"
while read -r seed off len; do
    xt_check_pattern /dev/mapper/pc0 "$seed" "$off" "$len" "the kernel's read of pcache-ublk's dirty data"
done </tmp/expect
xt_log "the kernel reads pcache-ublk's dirty data"
xt_pcache_settle pc0 120 || xt_fail "the kernel's writeback did not drain within 120 s"
dmsetup remove pc0
while read -r seed off len; do
    xt_check_pattern "$BACKING" "$seed" "$off" "$len" "backing after the kernel's writeback"
done </tmp/expect
xt_log "the kernel's writeback drained pcache-ublk's data to the backing"
