# xtask: timeout=1800
# xtask: needs=pcache-mkfs needs=pcache-dump needs=pcache-ublk:add,del,status,set,flush
# Cache modes, the sequential cutoff and online flush (issue 14). For each mode,
# formatted with `pcache-mkfs --cache-mode`: fio write+verify through pcache-ublk;
# in writethrough, writearound and passthrough the backing device holds a
# completed write right after it completed (read past the cache, O_DIRECT);
# writearound leaves no key for a written, never-read range; writeonly and
# passthrough cache no read miss; `del --flush` leaves a clean cache (dump) and a
# backing device equal to what was written; the kernel's dm-pcache opens the
# cache left in that mode and reads every byte back. Then, in writeback: a 64 MiB
# sequential read with a 4 MiB cutoff caches at most 4 MiB; switching writeback
# -> writethrough under fio drains to clean with no verify error.
xt_need pcache-mkfs pcache-dump
xt_need_sub pcache-ublk add del status set flush

# Bytes the cache holds (the index): the top-level `cached_bytes` of `status` (the
# replay's own cached_bytes sits in the nested "replay" object).
cached() {
    pcache-ublk status -n "$UBLK_ID" >/tmp/xt-status.txt || xt_fail "pcache-ublk status"
    sed -n 's/^cached_bytes: //p' /tmp/xt-status.txt
}
seed=1600
for mode in writeback writethrough writearound writeonly passthrough; do
    xt_log "==== $mode"
    pcache-mkfs --force --quiet --cache-mode "$mode" "$PMEM" || xt_fail "pcache-mkfs --cache-mode $mode"
    pcache-dump "$PMEM" | grep -q "mode $mode" || xt_fail "pcache-dump does not show mode $mode"
    # The backing holds data of its own at 900 MiB, never written through the cache.
    xt_write_pattern "$BACKING" "own-$mode" 900 4
    xt_ublk_add --cache "$PMEM" --backing "$BACKING"
    xt_ublk_status
    [ "$(xt_json_val /tmp/xt-status.json cache_mode)" = "$mode" ] ||
        { cat /tmp/xt-status.json; xt_fail "status does not say cache_mode $mode"; }
    seed=$((seed + 101))
    xt_fio_job /tmp/m.fio "$UBLK_DEV" 64 16 "$seed"
    fio /tmp/m.fio --output="$OUT/fio-$mode.txt" ||
        { tail -30 "$OUT/fio-$mode.txt"; xt_fail "fio write+verify in $mode"; }
    case $mode in writethrough | writearound | passthrough)
        before=$(cached)
        # A completed write (O_DIRECT, no fsync) is on the backing device at once.
        xt_pattern "wt-$mode" $((2 << 20)) >/tmp/wt
        dd if=/tmp/wt of="$UBLK_DEV" bs=1M seek=400 oflag=direct conv=notrunc 2>/dev/null ||
            xt_fail "write to $UBLK_DEV"
        [ "$(xt_md5 "$BACKING" 400 2)" = "$(md5sum </tmp/wt | cut -d' ' -f1)" ] ||
            xt_fail "$mode: a completed write is not on the backing device"
        after=$(cached)
        if [ "$mode" != writethrough ]; then
            [ "$after" = "$before" ] ||
                xt_fail "$mode: a written, never-read range left keys ($before -> $after bytes cached)"
        fi
        xt_log "$mode: completed writes are on the backing device; cached $before -> $after"
        ;;
    esac
    case $mode in writeonly | passthrough)
        before=$(cached)
        xt_check_pattern "$UBLK_DEV" "own-$mode" 900 4 "$mode: a read miss"
        [ "$(cached)" = "$before" ] || xt_fail "$mode: a read miss was cached"
        xt_log "$mode: read misses are not cached"
        ;;
    esac
    # del --flush: clean when it returns.
    pcache-ublk del -n "$UBLK_ID" --flush 2>"$OUT/del-flush-$mode.txt" ||
        { cat "$OUT/del-flush-$mode.txt"; xt_fail "del --flush in $mode"; }
    tail -2 "$OUT/del-flush-$mode.txt"
    pcache-dump "$PMEM" >"$OUT/dump-$mode.txt" || xt_fail "pcache-dump after del --flush"
    st=$(grep '^status:' "$OUT/dump-$mode.txt")
    set -- $st
    [ "$8" = "$9" ] || xt_fail "$mode: not clean after del --flush: $st"
    # The backing device alone: fio's data, read past the cache.
    xt_fio_job /tmp/mb.fio "$BACKING" 64 16 "$seed"
    fio /tmp/mb.fio --verify_only=1 --output="$OUT/fio-backing-$mode.txt" ||
        { tail -20 "$OUT/fio-backing-$mode.txt"; xt_fail "$mode: the backing device after del --flush"; }
    # The kernel opens the cache left in this mode and reads every byte back.
    xt_pcache_create pc0 false
    xt_fio_job /tmp/mk.fio /dev/mapper/pc0 64 16 "$seed"
    fio /tmp/mk.fio --verify_only=1 --output="$OUT/fio-kernel-$mode.txt" ||
        { tail -20 "$OUT/fio-kernel-$mode.txt"; xt_fail "$mode: the kernel's read of the cache"; }
    xt_check_pattern /dev/mapper/pc0 "own-$mode" 900 4 "$mode: the kernel's read"
    dmsetup remove pc0 || xt_fail "dmsetup remove pc0"
    xt_log "$mode: fio verified, del --flush clean, backing complete, the kernel reads it all"
done

xt_log "==== sequential cutoff"
pcache-mkfs --force --quiet "$PMEM" || xt_fail "pcache-mkfs"
xt_write_pattern "$BACKING" seq 1024 64
xt_ublk_add --cache "$PMEM" --backing "$BACKING" --queues 1 --seq-cutoff-read 4M
sleep 1 # udev's probe of the new device reads (and caches) a few KiB
before=$(cached)
dd if="$UBLK_DEV" of=/dev/null bs=256k skip=$((1024 * 4)) count=256 iflag=direct 2>/dev/null ||
    xt_fail "sequential read"
c=$(($(cached) - before))
[ "$c" -le $((4 << 20)) ] || xt_fail "a 64 MiB sequential read with a 4 MiB cutoff cached $c bytes"
[ "$c" -ge $((1 << 20)) ] || xt_fail "the start of a sequential stream was not cached ($c bytes)"
[ "$(sed -n 's/^bypassed_reads: //p' /tmp/xt-status.txt)" -ge $((60 << 20)) ] ||
    { cat /tmp/xt-status.txt; xt_fail "bypassed_reads too small"; }
xt_check_pattern "$UBLK_DEV" seq 1024 64 "read past the cutoff"
xt_log "cutoff: $c bytes cached of a 64 MiB stream"

xt_log "==== writeback -> writethrough under fio"
xt_fio_job /tmp/sw.fio "$UBLK_DEV" 128 32 4242
fio /tmp/sw.fio --output="$OUT/fio-switch-1.txt" || xt_fail "fio before the switch"
xt_ublk_status
[ "$(xt_json_val /tmp/xt-status.json dirty_bytes)" -gt 0 ] || xt_log "(already clean before the switch)"
xt_fio_job /tmp/sw2.fio "$UBLK_DEV" 128 32 4343
fio /tmp/sw2.fio --output="$OUT/fio-switch-2.txt" &
fpid=$!
sleep 1
pcache-ublk set -n "$UBLK_ID" cache_mode writethrough || xt_fail "set cache_mode writethrough"
wait $fpid || { tail -20 "$OUT/fio-switch-2.txt"; xt_fail "fio across the switch"; }
pcache-ublk flush -n "$UBLK_ID" --wait 2>"$OUT/flush.txt" || { cat "$OUT/flush.txt"; xt_fail "flush --wait"; }
tail -1 "$OUT/flush.txt"
xt_ublk_status
[ "$(xt_json_val /tmp/xt-status.json draining)" = false ] ||
    { cat /tmp/xt-status.json; xt_fail "still draining after flush --wait"; }
[ "$UBLK_DIRTY_TAIL" = "$UBLK_KEY_HEAD" ] || xt_fail "not clean after the drain"
fio /tmp/sw2.fio --verify_only=1 --output="$OUT/fio-switch-v.txt" ||
    { tail -20 "$OUT/fio-switch-v.txt"; xt_fail "verify after the switch"; }
xt_fio_job /tmp/sw2b.fio "$BACKING" 128 32 4343
fio /tmp/sw2b.fio --verify_only=1 --output="$OUT/fio-switch-b.txt" ||
    { tail -20 "$OUT/fio-switch-b.txt"; xt_fail "the backing device after the drain"; }
xt_ublk_del
xt_log "cache modes OK"
