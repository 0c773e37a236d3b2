# xtask: quick timeout=600
# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del
# Power cut under pcache-ublk. Boot 1: pcache-mkfs, pcache-ublk, 1 MiB chunks
# written O_DIRECT + fsync, each logged (to the host, over 9p) only after its
# fsync returned; the power is cut in the middle (QEMU exits at once).
# host1.sh: pcache-fsck on the image is clean. boot2.sh: pcache-ublk on the
# same images replays the cache, and every logged chunk reads back.
xt_need pcache-mkfs
xt_need_sub pcache-ublk add
pcache-mkfs "$PMEM" || xt_fail "pcache-mkfs $PMEM exited $?"
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
: >"$OUT/done.txt"
xt_chunk_loop "$UBLK_DEV" 64 100 "$OUT/done.txt" &
i=0
while [ "$(wc -l <"$OUT/done.txt")" -lt 30 ]; do
    i=$((i + 1))
    [ "$i" -gt 600 ] && xt_fail "not 30 chunks done in 60 s"
    sleep 0.1
done
xt_powercut
