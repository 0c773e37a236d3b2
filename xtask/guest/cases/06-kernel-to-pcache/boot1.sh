# xtask: quick timeout=300
# kernel -> pcache. Boot 1: the kernel's dm-pcache (data_crc true) formats
# the cache over a backing whose writes fail (dm-flakey error_writes), so
# writeback cannot drain: three known extents are acknowledged and stay dirty
# in pmem. `dmsetup remove`; the backing is untouched (all zeros there).
# host1.sh: pcache-fsck is clean, pcache-dump agrees with the kernel's last
# `dmsetup status`, `pcache-replay --export` presents exactly that data.
# boot2.sh: pcache-ublk serves the same cache over the real backing and reads
# the same data back.
set -e
xt_flakey bk "$BACKING"
xt_pcache_create pc0 true "$PMEM" /dev/mapper/bk
: >"$OUT/expect.txt"
for spec in "1 64 8" "2 300 3" "3 1000 1"; do
    set -- $spec
    xt_write_pattern /dev/mapper/pc0 "k2p-$1" "$2" "$3"
    xt_check_pattern /dev/mapper/pc0 "k2p-$1" "$2" "$3" "read-back through the kernel"
    echo "k2p-$1 $2 $3" >>"$OUT/expect.txt"
done
sleep 2 # writeback tries (and fails) meanwhile
dmsetup status pc0 | tee "$OUT/dmsetup-status-last.txt"
set -- $(cat "$OUT/dmsetup-status-last.txt")
[ "${10}" != "${11}" ] || xt_fail "the cache is clean (key_head ${10} = dirty_tail ${11}): writeback drained to a failing backing?"
dmsetup remove pc0
dmsetup remove bk
while read -r seed off len; do
    [ "$(xt_md5 "$BACKING" "$off" "$len")" = "$(xt_zero_md5 "$len")" ] ||
        xt_fail "the backing at $off MiB is not zero: writeback reached it"
done <"$OUT/expect.txt"
xt_log "kernel wrote $(wc -l <"$OUT/expect.txt") extents; left dirty in the cache"
touch /tmp/xt-allow-kernel-warnings # failing backing writes are logged by dm-pcache
