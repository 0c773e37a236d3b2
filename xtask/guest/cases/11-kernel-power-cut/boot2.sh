# Boot 2: the kernel replays the power-cut cache; every fsync'd chunk reads back.
xt_pcache_create pc0 false
dmsetup status pc0 | tee "$OUT/dmsetup-status-boot2.txt"
xt_chunks_verify /dev/mapper/pc0 64 "$OUT/done.txt"
xt_pcache_settle pc0 120 || xt_fail "writeback did not drain within 120 s"
dmsetup remove pc0
xt_chunks_verify "$BACKING" 64 "$OUT/done.txt"
