# xtask: timeout=600
# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del,status
# The copy-mode fallback (kernels without user copy), forced with the hidden
# `--no-user-copy` on this one: status says `buffer`; fio write+verify (random
# 4 KiB..1 MiB blocks, QD 1 and QD 32) while backing misses go to the workers
# in the requests' own buffers; then `add` again on the same cache, in
# zero-copy mode (the default on a pmem block device: writes go from the
# requests' pages to /dev/pmem0 with WRITE_FIXED), verify everything and write
# it all again (another seed), with a flush job beside; then verify that in
# user-copy mode (`--no-zero-copy`) and in copy mode.
xt_need pcache-mkfs
xt_need_sub pcache-ublk add del status
pcache-mkfs "$PMEM" || xt_fail "pcache-mkfs $PMEM exited $?"
# Data on the backing first, so reads miss and go to the workers.
xt_write_pattern "$BACKING" base 0 64
xt_ublk_add --cache "$PMEM" --backing "$BACKING" --no-user-copy --workers 4
pcache-ublk status -n "$UBLK_ID" --json >"$OUT/status-buffer.json" || xt_fail "status"
grep -q '"copy_mode": *"buffer"' "$OUT/status-buffer.json" ||
    { cat "$OUT/status-buffer.json"; xt_fail "status does not say copy_mode buffer"; }
grep -q '"workers": *4' "$OUT/status-buffer.json" ||
    { cat "$OUT/status-buffer.json"; xt_fail "status does not say 4 workers"; }
# Misses through the workers, in copy mode: the backing's data reads back.
xt_check_pattern "$UBLK_DEV" base 0 64 "copy mode, misses"
cat >/tmp/copy.fio <<JOB
[global]
filename=$UBLK_DEV
direct=1
ioengine=libaio
rw=randwrite
bsrange=4k-1m
blockalign=4k
verify=crc32c
verify_fatal=1
randseed=1313
[qd1]
iodepth=1
size=16m
offset=64m
[qd32]
stonewall
iodepth=32
numjobs=2
size=32m
offset=128m
offset_increment=64m
JOB
fio /tmp/copy.fio --output="$OUT/fio-buffer.txt" || { tail -30 "$OUT/fio-buffer.txt"; xt_fail "fio write+verify in copy mode"; }
xt_ublk_del
xt_log "copy mode: written and verified; now zero copy on the same cache"
xt_ublk_add --cache "$PMEM" --backing "$BACKING" --zero-copy
pcache-ublk status -n "$UBLK_ID" --json >"$OUT/status-zc.json" || xt_fail "status"
grep -q '"copy_mode": *"zero-copy"' "$OUT/status-zc.json" ||
    { cat "$OUT/status-zc.json"; xt_fail "the second add is not in zero-copy mode"; }
fio /tmp/copy.fio --verify_only=1 --output="$OUT/fio-verify-zc.txt" ||
    { tail -30 "$OUT/fio-verify-zc.txt"; xt_fail "fio verify in zero-copy mode of what copy mode wrote"; }
xt_check_pattern "$UBLK_DEV" base 0 64 "zero copy"
# New data through zero copy, with fsyncs beside (flushes wait for the writes in
# flight on their queue).
sed 's/randseed=1313/randseed=2424/; s/^verify_fatal=1/verify_fatal=1\nfsync=7/' /tmp/copy.fio >/tmp/copy2.fio
fio /tmp/copy2.fio --output="$OUT/fio-zc.txt" || { tail -30 "$OUT/fio-zc.txt"; xt_fail "fio write+verify in zero-copy mode"; }
pcache-ublk status -n "$UBLK_ID" --json >"$OUT/status-zc-after.json" || xt_fail "status"
zc=$(grep -o '"direct_writes": *[0-9]*' "$OUT/status-zc-after.json" | tr -dc 0-9)
[ "${zc:-0}" -gt 0 ] || { cat "$OUT/status-zc-after.json"; xt_fail "no write went out by zero copy"; }
xt_log "zero copy: $zc writes ($(grep -o '"direct_aborts": *[0-9]*' "$OUT/status-zc-after.json"))"
xt_ublk_del
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
pcache-ublk status -n "$UBLK_ID" --json | grep -q '"copy_mode": *"user-copy"' ||
    xt_fail "add without --zero-copy is not in user-copy mode"
fio /tmp/copy2.fio --verify_only=1 --output="$OUT/fio-verify-uc.txt" ||
    { tail -30 "$OUT/fio-verify-uc.txt"; xt_fail "fio verify in user-copy mode of what zero copy wrote"; }
xt_check_pattern "$UBLK_DEV" base 0 64 "user copy"
xt_ublk_del
xt_ublk_add --cache "$PMEM" --backing "$BACKING" --no-user-copy
fio /tmp/copy2.fio --verify_only=1 --output="$OUT/fio-verify-buf.txt" ||
    { tail -30 "$OUT/fio-verify-buf.txt"; xt_fail "fio verify in copy mode again"; }
xt_ublk_del
xt_log "copy modes OK"
