# xtask: pmem_mb=514 timeout=1500 backing_mb=2048
# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del,status,set
# GC and a full cache: the smallest cache (514 MiB NVDIMM -> 512 MiB
# /dev/pmem0 -> 31 segments), gc_percent 10, twice the cache size written;
# fio verify passes; the status shows GC ran and key_tail moved on (and
# whether it went round to a lower segment: the log wrapped).
xt_need pcache-mkfs
xt_need_sub pcache-ublk add del status set
pcache-mkfs "$PMEM" || xt_fail "pcache-mkfs $PMEM exited $?"
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
pcache-ublk set -n "$UBLK_ID" gc_percent 10 || xt_fail "pcache-ublk set -n $UBLK_ID gc_percent 10 exited $?"
xt_ublk_status
first_tail=$UBLK_KEY_TAIL
: >/tmp/tails
( while :; do
    xt_ublk_status >/dev/null 2>&1 && echo "$UBLK_KEY_TAIL" >>/tmp/tails
    sleep 2
done ) &
sampler=$!
F="--filename=$UBLK_DEV --direct=1 --ioengine=libaio --iodepth=16 --verify=crc32c --verify_fatal=1"
# pass 1: 768 MiB (1.5x the cache) of 256 KiB..1 MiB writes over the first
# 768 MiB (no verify); pass 2: 256 MiB more (4 KiB..256 KiB random writes)
# over the same span, then verify everything pass 2 wrote. In all, twice the
# cache size, with GC reclaiming from 10 % full on.
fio $F --name=fill --rw=write --bsrange=256k-1m --size=768m --verify=0 \
    --output="$OUT/fio-fill.txt" || { tail -20 "$OUT/fio-fill.txt"; xt_fail "fio fill"; }
fio $F --name=over --rw=randwrite --bsrange=4k-256k --blockalign=4k --size=768m --io_size=256m \
    --randseed=2 --output="$OUT/fio-over.txt" ||
    { tail -30 "$OUT/fio-over.txt"; xt_fail "fio write+verify after GC"; }
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
xt_ublk_status
echo "$UBLK_KEY_TAIL" >>/tmp/tails
cp /tmp/tails "$OUT/key-tails.txt"
cp /tmp/xt-status.json "$OUT/status-end.json"
xt_log "key_tail: first $first_tail, last $UBLK_KEY_TAIL"
segs=$(for t in $(cat /tmp/tails); do xt_pos_seg "$t"; done | sort -un | wc -l)
wrapped=no
prev=
for t in $(cat /tmp/tails); do
    s=$(xt_pos_seg "$t")
    [ -n "$prev" ] && [ "$s" -lt "$prev" ] && wrapped=yes
    prev=$s
done
xt_log "key_tail visited $segs segment(s); went back to a lower segment id (wrapped): $wrapped"
[ "$UBLK_KEY_TAIL" != "$first_tail" ] || xt_fail "key_tail is still $first_tail: GC never advanced the log"
runs=$(xt_json_val /tmp/xt-status.json gc_runs)
[ -z "$runs" ] || [ "$runs" -gt 0 ] || xt_fail "status says gc_runs $runs after writing twice the cache size"
used=$(xt_json_val /tmp/xt-status.json segs_used)
xt_log "gc_runs ${runs:-?}, segs_used ${used:-?} of 31"
xt_ublk_del
xt_log "GC / full cache OK"
