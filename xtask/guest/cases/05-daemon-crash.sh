# xtask: timeout=600
# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del,recover
# Daemon crash: 1 MiB chunks are written through pcache-ublk, each O_DIRECT
# and fsync'd, and logged only after its fsync returned; pcache-ublk is
# killed with SIGKILL in the middle; `pcache-ublk recover` re-attaches to the
# same ublk device (user recovery) after replaying the cache. Every logged
# chunk must read back, the writer must finish, and the device must work. The
# chunk in flight may see its fsync fail once with EIO after the recovery (its
# write may have been lost with the daemon) and is written again.
xt_need pcache-mkfs
xt_need_sub pcache-ublk add del recover
pcache-mkfs "$PMEM" || xt_fail "pcache-mkfs $PMEM exited $?"
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
pid=$(xt_ublk_pid)
[ -n "$pid" ] || xt_fail "no pcache-ublk process after add"
: >/tmp/done
xt_chunk_loop "$UBLK_DEV" 64 100 /tmp/done >/tmp/writer.log 2>&1 &
writer=$!
i=0
while [ "$(wc -l </tmp/done)" -lt 40 ]; do
    i=$((i + 1))
    [ "$i" -gt 600 ] && xt_fail "the writer did not get 40 chunks done in 60 s"
    sleep 0.1
done
kill -9 "$pid"
n=$(wc -l </tmp/done)
xt_log "SIGKILL to pcache-ublk (pid $pid) with $n chunks fsync'd"
cp /tmp/done "$OUT/done-at-kill.txt"
i=0
while kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -gt 100 ] && xt_fail "pcache-ublk $pid survives SIGKILL for 10 s"
    sleep 0.1
done
sleep 1
[ -e "/dev/ublkc$UBLK_ID" ] || xt_fail "/dev/ublkc$UBLK_ID is gone after the daemon died: nothing to recover"
pcache-ublk recover -n "$UBLK_ID" --cache "$PMEM" --backing "$BACKING" >/tmp/recover.out 2>&1
rc=$?
cat /tmp/recover.out
[ "$rc" = 0 ] || xt_fail "pcache-ublk recover exited $rc"
[ -b "$UBLK_DEV" ] || xt_fail "$UBLK_DEV is not a block device after recover"
i=0
while kill -0 "$writer" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -gt 3000 ] && xt_fail "the writer is stuck 300 s after recover"
    sleep 0.1
done
wait "$writer" || { cat /tmp/writer.log; xt_fail "writes failed across the crash (no user recovery?)"; }
xt_log "writer finished: $(wc -l </tmp/done) chunks"
# The chunk in flight at the kill may have its fsync fail once (EIO: its write was
# acknowledged but not yet flushed when the daemon died); it is rewritten. More would be
# a false alarm.
retried=$(wc -l </tmp/done.retried 2>/dev/null || echo 0)
xt_log "chunks whose fsync reported the crash: $retried"
[ "$retried" -le 1 ] || xt_fail "$retried chunks had a failed fsync: only the one in flight may"
xt_chunks_verify "$UBLK_DEV" 64 /tmp/done
fio --filename="$UBLK_DEV" --direct=1 --ioengine=libaio --iodepth=16 --name=after --rw=randwrite \
    --bs=4k --offset=1024m --size=16m --verify=crc32c --verify_fatal=1 --output="$OUT/fio-after.txt" ||
    xt_fail "fio write+verify after recover"
xt_ublk_del
xt_log "restart on the same cache: the data must survive the crash + recover + del"
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
xt_chunks_verify "$UBLK_DEV" 64 /tmp/done
xt_ublk_del
