# xtask: quick timeout=240
# The kernel's dm-pcache formats $PMEM over $BACKING; fio writes and verifies
# data through /dev/mapper/pc0; the cache is then re-attached (loaded, not
# re-formatted) and the data verified again. host.sh checks the on-media
# superblock in the extracted pmem0 image.
set -e
xt_pcache_create pc0
dmsetup table pc0 | tee "$OUT/dmsetup-table.txt"
dmsetup status pc0 | tee "$OUT/dmsetup-status-fresh.txt"

F="--filename=/dev/mapper/pc0 --direct=1 --ioengine=libaio --iodepth=8 --verify=crc32c --verify_fatal=1"
SEQ="--name=seq --rw=write --bs=64k --offset=64M --size=8M"
RND="--name=rnd --rw=randwrite --bs=4k --offset=256M --size=4M --randseed=1234"
fio $F $SEQ --output="$OUT/fio-seq.txt" || xt_fail "fio sequential write+verify (see fio-seq.txt)"
fio $F $RND --output="$OUT/fio-rnd.txt" || xt_fail "fio random write+verify (see fio-rnd.txt)"
dmsetup status pc0 | tee "$OUT/dmsetup-status.txt"
used=$(xt_dm_field pc0 7)
[ "$used" -ge 1 ] || xt_fail "segs_used=$used after writing 12 MiB"
dmsetup remove pc0

xt_log "re-attach the cache: the data must still verify"
xt_pcache_create pc0
dmsetup status pc0 | tee "$OUT/dmsetup-status-reattached.txt"
fio $F $SEQ --verify_only=1 --output="$OUT/fio-seq-verify.txt" || xt_fail "sequential data lost on re-attach"
fio $F $RND --verify_only=1 --output="$OUT/fio-rnd-verify.txt" || xt_fail "random data lost on re-attach"
dmsetup remove pc0
xt_log "kernel dm-pcache smoke OK"
