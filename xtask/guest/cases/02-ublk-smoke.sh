# xtask: quick timeout=600
# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del,status
# pcache-ublk smoke: pcache-mkfs; `pcache-ublk add`; fio write+verify on
# /dev/ublkbN (random 4 KiB..1 MiB blocks, QD 1 and QD 32, 2 jobs each);
# `del`; `add` again on the same cache; fio verify-only reads it all back.
xt_need pcache-mkfs
xt_need_sub pcache-ublk add del status
pcache-mkfs "$PMEM" || xt_fail "pcache-mkfs $PMEM exited $?"
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
[ "$(blockdev --getsz "$UBLK_DEV")" = "$BACKING_SECTORS" ] ||
    xt_fail "$UBLK_DEV is $(blockdev --getsz "$UBLK_DEV") sectors, the backing $BACKING_SECTORS"
pcache-ublk list | tee "$OUT/list.txt" || xt_fail "pcache-ublk list exited $?"

cat >/tmp/smoke.fio <<JOB
[global]
filename=$UBLK_DEV
direct=1
ioengine=libaio
rw=randwrite
bsrange=4k-1m
blockalign=4k
verify=crc32c
verify_fatal=1
numjobs=2
randseed=4242
[qd1]
iodepth=1
size=16m
offset=0
offset_increment=32m
[qd32]
stonewall
iodepth=32
size=48m
offset=256m
offset_increment=128m
JOB
fio /tmp/smoke.fio --output="$OUT/fio-write.txt" || { tail -30 "$OUT/fio-write.txt"; xt_fail "fio write+verify on $UBLK_DEV"; }
xt_ublk_status
xt_log "after writing: key_head $UBLK_KEY_HEAD dirty_tail $UBLK_DIRTY_TAIL key_tail $UBLK_KEY_TAIL"
cp /tmp/xt-status.json "$OUT/status-1.json"
xt_ublk_del

xt_log "add again on the same cache: everything must read back"
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
fio /tmp/smoke.fio --verify_only=1 --output="$OUT/fio-verify.txt" ||
    { tail -30 "$OUT/fio-verify.txt"; xt_fail "fio verify-only after del + add"; }
xt_ublk_del
xt_log "pcache-ublk smoke OK"
