# xtask: quick timeout=300
# xtask: needs=pcache-mkfs
# pcache -> kernel: our pcache-mkfs formats /dev/pmem0 (gc_percent 33, no
# data_crc); the kernel's dm-pcache must activate that cache WITHOUT
# reformatting it, and then work on it. Proof of "activated, not formatted":
#   - `dmsetup status` shows gc_percent 33 (a format would write 70);
#   - the kernel's activation wrote cache_info once, to the slot mkfs did
#     not leave newest, with seq + 1 (a format writes slot 1 with seq 1);
#   - superblock, seg_info and seg_gen blocks are byte-identical before and after.
# Then: data written through the kernel verifies after a re-attach and drains
# to the backing; the kernel refuses data_crc true on this (no-CRC) cache.
# host1.sh formats the host's copy of the image with data_crc; boot2.sh
# checks that the kernel takes that one too.
xt_need pcache-mkfs
pcache-mkfs --gc-percent 33 "$PMEM" >"$OUT/mkfs1.txt" 2>&1
rc=$?
cat "$OUT/mkfs1.txt"
[ "$rc" = 0 ] || xt_fail "pcache-mkfs --gc-percent 33 $PMEM exited $rc"
[ "$(xt_hex64 "$PMEM" 4104)" = 65b05efa96c596ef ] || xt_fail "no pcache superblock after pcache-mkfs"
xt_meta_snap "$PMEM" /tmp/meta-mkfs
a0=$(xt_cache_info_seq "$PMEM" 0)
a1=$(xt_cache_info_seq "$PMEM" 1)
xt_log "after pcache-mkfs: cache_info seq slot0=$a0 slot1=$a1"

set -e
xt_pcache_create pc0 false
dmsetup status pc0 | tee "$OUT/dmsetup-status-activated.txt"
gc=$(xt_dm_field pc0 8)
[ "$gc" = 33 ] || xt_fail "the kernel shows gc_percent $gc, not pcache-mkfs's 33: it reformatted the cache"
flags=$((0x$(xt_dm_field pc0 9)))
[ $((flags & 2)) = 2 ] || xt_fail "cache_info flags $flags lack INIT_DONE"
[ "$(xt_dm_field pc0 5)" = "$(xt_u32 /tmp/meta-mkfs 16)" ] || xt_fail "seg_num differs"
xt_write_pattern /dev/mapper/pc0 p2k 100 4
F="--filename=/dev/mapper/pc0 --direct=1 --ioengine=libaio --iodepth=8 --verify=crc32c --verify_fatal=1"
RND="--name=rnd --rw=randwrite --bs=4k --offset=256M --size=4M --randseed=77"
fio $F $RND --output="$OUT/fio-rnd.txt" || xt_fail "fio random write+verify on the mkfs'd cache"
dmsetup remove pc0

b0=$(xt_cache_info_seq "$PMEM" 0)
b1=$(xt_cache_info_seq "$PMEM" 1)
xt_log "after the kernel's activation: cache_info seq slot0=$b0 slot1=$b1"
if [ "$a1" -ge "$a0" ] && [ "$a1" != 0 ]; then
    want0=$(((a1 + 1) % 256)) want1=$a1
else
    want0=$a0 want1=$(((a0 + 1) % 256))
fi
[ "$b0:$b1" = "$want0:$want1" ] ||
    xt_fail "cache_info seqs $b0:$b1, want $want0:$want1 (one activation write to the other slot)"
xt_meta_snap "$PMEM" /tmp/meta-kernel
cmp /tmp/meta-mkfs /tmp/meta-kernel || xt_fail "the kernel rewrote superblock/seg_info/seg_gen metadata"
xt_log "activated without reformatting: gc_percent 33 kept, one cache_info write, metadata unchanged"

xt_pcache_create pc0 false
xt_check_pattern /dev/mapper/pc0 p2k 100 4 "data after re-attach"
fio $F $RND --verify_only=1 --output="$OUT/fio-rnd-verify.txt" || xt_fail "random data lost on re-attach"
xt_pcache_settle pc0 60 || xt_fail "writeback did not finish within 60 s"
dmsetup status pc0 | tee "$OUT/dmsetup-status-last.txt"
dmsetup remove pc0
xt_check_pattern "$BACKING" p2k 100 4 "backing after writeback"

xt_log "the kernel must refuse data_crc true on a cache formatted without it"
if dmsetup create bad --table "0 $BACKING_SECTORS pcache $PMEM $BACKING 4 cache_mode writeback data_crc true" 2>/tmp/err; then
    dmsetup remove bad
    xt_fail "the kernel accepted data_crc true on a cache pcache-mkfs formatted without data_crc"
fi
dmsetup remove bad 2>/dev/null || true
