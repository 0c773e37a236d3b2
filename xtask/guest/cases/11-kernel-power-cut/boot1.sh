# xtask: quick timeout=300
# Power cut under the kernel's dm-pcache (the same test as 09-power-cut, with
# the kernel as the writer). Boot 1: 1 MiB chunks written O_DIRECT + fsync
# through dm-pcache over a backing whose writes fail (so everything stays in
# the cache), each logged to the host only after its fsync; the power is cut
# mid-way. host1.sh: pcache-fsck on the image, if built. Boot 2: the kernel
# re-attaches (over the real backing) and every logged chunk reads back.
xt_flakey bk "$BACKING"
xt_pcache_create pc0 false "$PMEM" /dev/mapper/bk
: >"$OUT/done.txt"
xt_chunk_loop /dev/mapper/pc0 64 100 "$OUT/done.txt" &
i=0
while [ "$(wc -l <"$OUT/done.txt")" -lt 30 ]; do
    i=$((i + 1))
    [ "$i" -gt 600 ] && xt_fail "not 30 chunks done in 60 s"
    sleep 0.1
done
xt_powercut
