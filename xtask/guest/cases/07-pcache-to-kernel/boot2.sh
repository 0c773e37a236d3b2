# Boot 2: the cache pcache-mkfs wrote on the host (data_crc, default gc_percent).
# The kernel must refuse data_crc false, accept data_crc true without
# reformatting (DATA_CRC in cache_info flags, no data from boot 1 in it), and work.
if dmsetup create bad --table "0 $BACKING_SECTORS pcache $PMEM $BACKING 4 cache_mode writeback data_crc false" 2>/tmp/err; then
    dmsetup remove bad
    xt_fail "the kernel accepted data_crc false on a cache formatted with --data-crc"
fi
dmsetup remove bad 2>/dev/null || true
set -e
xt_pcache_create pc0 true
dmsetup status pc0 | tee "$OUT/dmsetup-status-boot2.txt"
flags=$((0x$(xt_dm_field pc0 9)))
[ $((flags & 1)) = 1 ] || xt_fail "cache_info flags $flags lack DATA_CRC"
[ "$(xt_dm_field pc0 8)" = 70 ] || xt_fail "gc_percent $(xt_dm_field pc0 8), want the default 70"
[ "$(xt_dm_field pc0 10)" = "0:0" ] || xt_fail "key_head $(xt_dm_field pc0 10) on a freshly formatted cache"
# boot 1's data is on the backing (written back), so it reads through the new cache
xt_check_pattern /dev/mapper/pc0 p2k 100 4 "boot 1's data through the re-formatted cache"
xt_write_pattern /dev/mapper/pc0 crc 200 4
dmsetup remove pc0
xt_pcache_create pc0 true
xt_check_pattern /dev/mapper/pc0 crc 200 4 "data_crc cache data after re-attach"
dmsetup remove pc0
