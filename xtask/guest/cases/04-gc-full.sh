# xtask: pmem_mb=514 timeout=1500 backing_mb=2048
# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del,status,set
# GC and a full cache: the smallest cache (514 MiB NVDIMM -> 512 MiB
# /dev/pmem0 -> 31 segments), gc_percent 10, about 3x the cache size written
# in 4 KiB random writes (so the key log outgrows its segment); fio verify
# passes; the status shows key_tail moved on to another segment (the log
# wrapped around).
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
F="--filename=$UBLK_DEV --direct=1 --ioengine=libaio --iodepth=32 --bs=4k --verify=crc32c --verify_fatal=1"
# pass 1: 1 GiB of 4 KiB random writes (no verify); pass 2: 512 MiB more
# over the same span, then verify everything pass 2 wrote.
fio $F --name=fill --rw=randwrite --size=768m --io_size=1024m --norandommap --verify=0 \
    --randseed=1 --output="$OUT/fio-fill.txt" || { tail -20 "$OUT/fio-fill.txt"; xt_fail "fio fill"; }
fio $F --name=over --rw=randwrite --size=512m --randseed=2 --output="$OUT/fio-over.txt" ||
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
xt_log "key_tail visited $segs segment(s); went back to a lower segment id: $wrapped"
[ "$segs" -ge 2 ] || xt_fail "key_tail never left segment $(xt_pos_seg "$first_tail"): GC did not advance the log"
xt_ublk_del
xt_log "GC / full cache OK"
