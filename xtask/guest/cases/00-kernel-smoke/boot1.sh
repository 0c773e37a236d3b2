# xtask: quick timeout=240
# The kernel's dm-pcache formats $PMEM over $BACKING (table
# `0 <sectors> pcache /dev/pmem0 /dev/vda 4 cache_mode writeback data_crc false`);
# fio writes and verifies data through /dev/mapper/pc0; `dmsetup remove`; the
# cache is re-attached (loaded, not re-formatted) and the data verified again;
# then the cache settles (writeback done) and the last `dmsetup status` goes to
# $OUT/dmsetup-status-last.txt for host.sh, which checks the image on the host.
set -e
xt_pcache_create pc0
dmsetup table pc0 | tee "$OUT/dmsetup-table.txt"
dmsetup status pc0 | tee "$OUT/dmsetup-status-fresh.txt"

F="--filename=/dev/mapper/pc0 --direct=1 --ioengine=libaio --iodepth=8 --verify=crc32c --verify_fatal=1"
SEQ="--name=seq --rw=write --bs=64k --offset=64M --size=8M"
RND="--name=rnd --rw=randwrite --bs=4k --offset=256M --size=4M --randseed=1234"
fio $F $SEQ --output="$OUT/fio-seq.txt" || xt_fail "fio sequential write+verify (see fio-seq.txt)"
fio $F $RND --output="$OUT/fio-rnd.txt" || xt_fail "fio random write+verify (see fio-rnd.txt)"
xt_write_pattern /dev/mapper/pc0 smoke 512 2
dmsetup status pc0 | tee "$OUT/dmsetup-status.txt"
used=$(xt_dm_field pc0 7)
[ "$used" -ge 1 ] || xt_fail "segs_used=$used after writing 14 MiB"
dmsetup remove pc0

xt_log "re-attach the cache: the data must still verify"
xt_pcache_create pc0
dmsetup status pc0 | tee "$OUT/dmsetup-status-reattached.txt"
fio $F $SEQ --verify_only=1 --output="$OUT/fio-seq-verify.txt" || xt_fail "sequential data lost on re-attach"
fio $F $RND --verify_only=1 --output="$OUT/fio-rnd-verify.txt" || xt_fail "random data lost on re-attach"
xt_check_pattern /dev/mapper/pc0 smoke 512 2 "dd pattern after re-attach"
xt_pcache_settle pc0 60 || xt_fail "writeback did not finish within 60 s"
dmsetup status pc0 | tee "$OUT/dmsetup-status-last.txt"
dmsetup remove pc0
# Writeback drained everything: the backing holds the data on its own.
xt_check_pattern "$BACKING" smoke 512 2 "backing (after writeback)"
xt_log "kernel dm-pcache smoke OK"
