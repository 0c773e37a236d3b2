# Boot 2: pcache-ublk on the power-cut images; every fsync'd chunk reads back.
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
xt_chunks_verify "$UBLK_DEV" 64 "$OUT/done.txt"
xt_ublk_del
xt_partial_end
