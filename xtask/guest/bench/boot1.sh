# xtask: timeout=1800
# `cargo xtask bench --vm`: the same fio jobs on raw pmem, raw backing,
# pcache-ublk (on /dev/pmem0 with O_DIRECT, user copy and zero copy, and
# through the page cache, and on device DAX), the daemon's RAM target (the
# ublk floor), the kernel's dm-pcache and dm-writecache, over the same pmem
# and backing, in one VM run. Each device's results go to
# $OUT/<device>.<job>.json (fio JSON); the host builds the table.
# Jobs (name rw bs iodepth), each over a prefilled span, time-based:
RT=${xt_bench_runtime:-5}
SPAN=${xt_bench_span_mb:-256}
JOBS="w4k-qd1:randwrite:4k:1 w4k-qd32:randwrite:4k:32 r4k-qd1:randread:4k:1 r4k-qd32:randread:4k:32 w64k-seq:write:64k:8"
# `--only` and `--devices` of the host: comma lists (empty: all).
ONLY=${xt_bench_only:-}
DEVICES=${xt_bench_devices:-}
# `--writeback-percent` of the host, for the pcache-ublk rows.
WBP=${xt_bench_wbp:-0}

# asked LIST NAME: whether NAME is in the comma list LIST (an empty list has all).
asked() { [ -z "$1" ] || case ",$1," in *",$2,"*) true ;; *) false ;; esac; }
# want DEV: whether the host asked for DEV; if not, says so in DEV.skipped.
want() {
    asked "$DEVICES" "$1" && return 0
    echo "not asked for (--devices)" >"$OUT/$1.skipped"
    return 1
}
# cache_state NAME FILE: the pcache-ublk cache's status (JSON) into FILE, when NAME
# is a pcache-ublk device (its segments used, GC runs, waits for space, writeback).
cache_state() {
    case $1 in pcache-ublk*) pcache-ublk status -n "$UBLK_ID" --json >"$2" 2>&1 ;; esac
}

# bench NAME DEV: prefill the span (so reads hit data), then every job asked for.
bench() {
    [ -b "$2" ] || xt_fail "$1: $2 is not a block device"
    xt_log "bench $1 on $2: prefill ${SPAN} MiB"
    fio --name=prefill --filename="$2" --direct=1 --ioengine=libaio --rw=write --bs=1m --iodepth=8 \
        --size="${SPAN}m" --output="$OUT/$1.prefill.txt" || xt_fail "$1: prefill"
    cache_state "$1" "$OUT/$1.prefill.status.json"
    for j in $JOBS; do
        IFS=: read -r name rw bs qd <<JOB
$j
JOB
        asked "$ONLY" "$name" || continue
        fio --name="$name" --filename="$2" --direct=1 --ioengine=libaio --rw="$rw" --bs="$bs" \
            --iodepth="$qd" --size="${SPAN}m" --time_based --runtime="$RT" --ramp_time=1 \
            --randseed=1 --output-format=json --output="$OUT/$1.$name.json" ||
            xt_fail "$1: fio $name"
        cache_state "$1" "$OUT/$1.$name.status.json"
        xt_log "  $1 $name done"
    done
}
# A fresh cache device for the next cache: the kernel formats a zeroed one.
wipe_pmem() { dd if=/dev/zero of="$PMEM" bs=1M count=64 oflag=direct 2>/dev/null || xt_fail "wipe $PMEM"; }

want pmem && bench pmem "$PMEM"
want backing && bench backing "$BACKING"

if ! xt_have pcache-ublk || ! xt_have pcache-mkfs; then
    for d in pcache-ublk pcache-ublk-zc pcache-ublk-mmap; do
        want $d && echo "$d: $(xt_why_not pcache-ublk)" >"$OUT/$d.skipped"
    done
else
    if want pcache-ublk; then
        wipe_pmem
        pcache-mkfs --force "$PMEM" >/dev/null || xt_fail "pcache-mkfs"
        xt_ublk_add --cache "$PMEM" --backing "$BACKING" --writeback-percent "$WBP"
        bench pcache-ublk "$UBLK_DEV"
        xt_ublk_del
    fi
    # The same with zero copy (writes of 32 KiB or more from the requests' pages).
    if want pcache-ublk-zc; then
        wipe_pmem
        pcache-mkfs --force "$PMEM" >/dev/null || xt_fail "pcache-mkfs"
        xt_ublk_add --cache "$PMEM" --backing "$BACKING" --writeback-percent "$WBP" --zero-copy
        bench pcache-ublk-zc "$UBLK_DEV"
        xt_ublk_del
    fi
    # The same through the page cache and msync (the media before BlockMedia).
    if want pcache-ublk-mmap; then
        wipe_pmem
        pcache-mkfs --force "$PMEM" >/dev/null || xt_fail "pcache-mkfs"
        export PCACHE_BLOCK_MEDIA=mmap
        xt_ublk_add --cache "$PMEM" --backing "$BACKING" --writeback-percent "$WBP"
        unset PCACHE_BLOCK_MEDIA
        bench pcache-ublk-mmap "$UBLK_DEV"
        xt_ublk_del
    fi
fi

# The floor: the same daemon serving a RAM disk (ublk round trips, no cache).
if ! want ublk-ram; then
    :
elif xt_have pcache-ublk; then
    xt_ublk_add --ram-target $(((SPAN + 64) << 20))
    bench ublk-ram "$UBLK_DEV"
    xt_ublk_del
else
    echo "ublk-ram: $(xt_why_not pcache-ublk)" >"$OUT/ublk-ram.skipped"
fi

# pcache-ublk on device DAX: the namespace turned into /dev/dax0.0 (cache-line
# flushes instead of msync), then back to fsdax for the kernel's targets.
# The device_dax driver must be bound for /dev/dax0.0 to open.
devdax() {
    modprobe device_dax 2>/dev/null
    ndctl create-namespace -f -e namespace0.0 -m devdax --map=mem --align=2M >"$OUT/ndctl-devdax.json" 2>&1 &&
        xt_wait_dev /dev/dax0.0 || return 1
    [ -e /sys/bus/dax/devices/dax0.0/driver ] || daxctl enable-device dax0.0 >>"$OUT/ndctl-devdax.json" 2>&1
    [ -e /sys/bus/dax/devices/dax0.0/driver ]
}
if ! want pcache-ublk-devdax; then
    :
elif xt_have pcache-ublk && xt_have pcache-mkfs && devdax; then
    pcache-mkfs --force /dev/dax0.0 >/dev/null || xt_fail "pcache-mkfs /dev/dax0.0"
    xt_ublk_add --cache /dev/dax0.0 --backing "$BACKING" --writeback-percent "$WBP"
    bench pcache-ublk-devdax "$UBLK_DEV"
    xt_ublk_del
else
    echo "pcache-ublk-devdax: no device DAX here ($(tail -1 "$OUT/ndctl-devdax.json" 2>/dev/null))" >"$OUT/pcache-ublk-devdax.skipped"
fi
if [ ! -b "$PMEM" ]; then
    ndctl create-namespace -f -e namespace0.0 -m fsdax --map=mem --align=2M >"$OUT/ndctl-fsdax.json" 2>&1 ||
        xt_fail "ndctl: back to fsdax"
    xt_wait_dev "$PMEM" || xt_fail "$PMEM did not come back"
fi

if want dm-pcache; then
    wipe_pmem
    xt_pcache_create pc0 false
    bench dm-pcache /dev/mapper/pc0
    dmsetup remove pc0
fi

if want dm-writecache; then
    wipe_pmem
    dmsetup create wc0 --table "0 $BACKING_SECTORS writecache p $BACKING $PMEM 4096 0" ||
        xt_fail "dmsetup create wc0 (writecache)"
    xt_wait_dev /dev/mapper/wc0
    bench dm-writecache /dev/mapper/wc0
    dmsetup message wc0 0 flush
    dmsetup remove wc0
fi
xt_log "bench done"
