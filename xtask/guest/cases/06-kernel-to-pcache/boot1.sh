# xtask: quick timeout=240
# kernel -> pcache compatibility. Boot 1: the kernel's dm-pcache (data_crc
# true) caches known data, then `dmsetup remove` leaves it dirty in pmem.
# host1.sh: our pcache-fsck and pcache-dump must accept the kernel's image.
# TODO(boot2.sh, once pcache-ublk works): serve the same image with pcache-ublk
# and read the data back (md5s in $OUT/expect.txt).
set -e
xt_pcache_create pc0 true
: >"$OUT/expect.txt"
for spec in "1 64 8" "2 300 3" "3 1000 1"; do
    set -- $spec
    seed=$1 off_mb=$2 len_mb=$3
    xt_pattern "$seed" $((len_mb << 20)) >/tmp/pat
    dd if=/tmp/pat of=/dev/mapper/pc0 bs=1M seek="$off_mb" oflag=direct conv=fsync 2>/dev/null
    sum=$(md5sum </tmp/pat | cut -d' ' -f1)
    got=$(dd if=/dev/mapper/pc0 bs=1M skip="$off_mb" count="$len_mb" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$sum" = "$got" ] || xt_fail "read-back mismatch at ${off_mb} MiB"
    echo "$off_mb $len_mb $sum" >>"$OUT/expect.txt"
done
dmsetup status pc0 | tee "$OUT/dmsetup-status.txt"
dmsetup remove pc0
xt_log "kernel wrote $(wc -l <"$OUT/expect.txt") extents; left dirty in the cache"
