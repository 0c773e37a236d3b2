# xtask: timeout=600
# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del,status
# Read misses to a slow backing device do not hold up the queue: the backing
# is a dm-delay device (20 ms per I/O); random 4 KiB reads that all miss run at
# QD 16 on one ublk queue, once with the queue thread serving everything
# (`--workers 0`) and with 4 workers, in user-copy and in copy mode. With
# workers, several misses wait at once, so the IOPS ratio must be well above 1
# (ideally 4). Then the data read
# through the slow device, some of it cached by the misses, is checked.
xt_need pcache-mkfs
xt_need_sub pcache-ublk add del status
modprobe dm_delay 2>/dev/null || xt_skip "no dm_delay module"
dmsetup create slow --table "0 $BACKING_SECTORS delay $BACKING 0 20" ||
    xt_fail "dmsetup create slow (delay 20 ms)"
xt_wait_dev /dev/mapper/slow || xt_fail "/dev/mapper/slow did not appear"
SLOW=/dev/mapper/slow
# Known data in the first 8 MiB, written to the slow device directly.
xt_write_pattern "$SLOW" slow 0 8

# iops WORKERS [ADD-OPTS]: fresh cache, one queue, all-miss random reads at QD 16;
# prints IOPS.
iops() {
    pcache-mkfs --force "$PMEM" >/dev/null || xt_fail "pcache-mkfs --force $PMEM"
    xt_ublk_add --cache "$PMEM" --backing "$SLOW" --queues 1 --depth 32 --workers "$1" $2 >&2
    fio --name=miss --filename="$UBLK_DEV" --direct=1 --ioengine=libaio --iodepth=16 \
        --rw=randread --bs=4k --offset=64m --size=128m --norandommap --randrepeat=0 \
        --runtime=6 --time_based --minimal >"$OUT/fio-$1.txt" 2>&1 ||
        { cat "$OUT/fio-$1.txt" >&2; xt_fail "fio with --workers $1"; }
    xt_check_pattern "$UBLK_DEV" slow 0 8 "data through the slow backing"
    xt_ublk_del >&2
    # terse v3: field 8 is the read IOPS
    cut -d';' -f8 "$OUT/fio-$1.txt" | tail -1
}
serial=$(iops 0)
offload=$(iops 4)
copymode=$(iops 4 --no-user-copy)
xt_log "all-miss 4 KiB reads at QD 16 over a 20 ms backing: --workers 0: $serial IOPS, --workers 4: $offload IOPS (copy mode: $copymode)"
awk -v a="$serial" -v b="$offload" 'BEGIN { exit !(a > 0 && b >= 2 * a) }' ||
    xt_fail "4 workers gave $offload IOPS against $serial without: misses still wait one at a time"
awk -v a="$serial" -v b="$copymode" 'BEGIN { exit !(a > 0 && b >= 2 * a) }' ||
    xt_fail "in copy mode, 4 workers gave $copymode IOPS against $serial without"
dmsetup remove slow || xt_fail "dmsetup remove slow"
xt_log "misses wait side by side: $(awk -v a="$serial" -v b="$offload" 'BEGIN { printf "%.1f", b / a }')x the IOPS with 4 workers"
