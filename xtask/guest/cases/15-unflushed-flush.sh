# xtask: timeout=600
# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del,list,recover
# A daemon that dies with acknowledged writes no FLUSH had covered may have lost
# them (they sat in its open ksets, the device's volatile write cache). After
# `recover`, the first FLUSH must fail with EIO, so fsync reports the possible
# loss instead of declaring those writes durable; the next FLUSH succeeds. A
# daemon killed right after a completed FLUSH recovers without a false alarm.
xt_need pcache-mkfs
xt_need_sub pcache-ublk add del list recover
pcache-mkfs "$PMEM" || xt_fail "pcache-mkfs $PMEM exited $?"
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
DEV=$UBLK_DEV
ID=$UBLK_ID

# fsync of the block device: the kernel sends the device a FLUSH.
fsync_dev() { dd if=/dev/null of="$DEV" bs=4k count=0 conv=fsync 2>/tmp/fsync.err; }

kill_and_recover() {
    _pid=$(sed -n 's/^ *"pid": *\([0-9][0-9]*\).*/\1/p' "/run/pcache-ublk/$ID.json" | head -1)
    [ -n "$_pid" ] || xt_fail "no daemon pid in the run record"
    kill -9 "$_pid"
    pcache-ublk recover -n "$ID" --cache "$PMEM" --backing "$BACKING" >/tmp/recover.out 2>&1 ||
        { cat /tmp/recover.out; xt_fail "recover exited $?"; }
    xt_log "recovered: $(cat /tmp/recover.out)"
}

# 1. Written and flushed, then killed: no false alarm.
dd if=/dev/urandom of="$DEV" bs=4k count=8 oflag=direct 2>/dev/null || xt_fail "write"
fsync_dev || { cat /tmp/fsync.err; xt_fail "fsync failed before any kill"; }
kill_and_recover
fsync_dev || { cat /tmp/fsync.err; xt_fail "the first FLUSH after recovering a flushed device failed"; }

# 2. Written, not flushed, killed at once (the kset flush delay is 1 s).
dd if=/dev/urandom of="$DEV" bs=4k count=8 oflag=direct 2>/dev/null || xt_fail "write"
kill_and_recover
if fsync_dev; then
    xt_fail "the first FLUSH after the daemon died with unflushed writes succeeded: a silent loss"
fi
grep -qi "input/output error" /tmp/fsync.err || { cat /tmp/fsync.err; xt_fail "fsync did not fail with EIO"; }
xt_log "first FLUSH after the crash: $(cat /tmp/fsync.err)"
fsync_dev || { cat /tmp/fsync.err; xt_fail "the second FLUSH failed"; }

# 3. The daemon killed again before any FLUSH: the warning is not lost either.
dd if=/dev/urandom of="$DEV" bs=4k count=8 oflag=direct 2>/dev/null || xt_fail "write"
kill_and_recover
kill_and_recover
fsync_dev && xt_fail "a second crash before any FLUSH lost the warning"
fsync_dev || { cat /tmp/fsync.err; xt_fail "the FLUSH after the warning failed"; }

xt_ublk_del
[ -e "/run/pcache-ublk/$ID.unflushed" ] && xt_fail "del left the marker behind"
xt_log "unflushed writes across a daemon crash OK"
