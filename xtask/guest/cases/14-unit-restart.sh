# xtask: timeout=900
# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del,list
# What the systemd unit (contrib/pcache-ublk@.service) does, without systemd:
# a supervisor loop runs `pcache-ublk add --foreground --id 0
# --recover-if-exists ...` and starts it again when it exits non-zero
# (Restart=on-failure, RestartSec=1), with NOTIFY_SOCKET pointing at a
# datagram socket (busybox syslogd on /dev/log writes what it receives to a
# file). fio write+verify runs on /dev/ublkb0 while the daemon is killed with
# SIGKILL twice: each restart must recover the quiesced device (not fail with
# "already exists"), and fio must finish without an error. fio's writes are
# FUA (O_SYNC): a write acknowledged without FUA or a later FLUSH sits in the
# device's volatile write cache (the engine's open ksets, closed within 1 s),
# which a daemon crash loses like a power cut (docs/design.md, "Guarantee"). Each READY=1 must
# come when /dev/ublkb0 is LIVE; a second `add --recover-if-exists` while the
# daemon runs is refused. Then `del` stops the daemon cleanly (exit 0, the loop
# ends, STOPPING=1), and a new `add` on the same cache reads all of fio's data
# back.
xt_need pcache-mkfs
xt_need_sub pcache-ublk add del list
pcache-ublk add --help | grep -q -- --recover-if-exists ||
    xt_skip "needs pcache-ublk add --recover-if-exists"
pcache-mkfs "$PMEM" || xt_fail "pcache-mkfs $PMEM exited $?"
ID=0
DEV=/dev/ublkb$ID
REC=/run/pcache-ublk/$ID.json

# The notify socket.
NOTIFY_LOG=/tmp/notify.log
: >"$NOTIFY_LOG"
syslogd_pid=
if command -v syslogd >/dev/null 2>&1; then
    syslogd -n -O "$NOTIFY_LOG" 2>/tmp/syslogd.err &
    syslogd_pid=$!
    xt_wait_dev /dev/log 50 || { cat /tmp/syslogd.err; kill "$syslogd_pid"; syslogd_pid=; }
fi
if [ -n "$syslogd_pid" ]; then
    NOTIFY=/dev/log
else
    NOTIFY=
    xt_partial "the sd_notify messages (no busybox syslogd to listen on a datagram socket)"
fi

# The unit: ExecStart, Restart=on-failure, RestartSec=1, at most 6 starts.
unit() {
    _n=0
    while :; do
        _n=$((_n + 1))
        NOTIFY_SOCKET=$NOTIFY pcache-ublk add --foreground --id "$ID" --recover-if-exists \
            --cache "$PMEM" --backing "$BACKING" >>/tmp/unit.out 2>>"$OUT/daemon.log"
        _rc=$?
        echo "$_n $_rc" >>/tmp/unit.exits
        [ "$_rc" = 0 ] && return 0
        [ "$_n" -ge 6 ] && return 1
        sleep 1
    done
}
: >/tmp/unit.exits
: >/tmp/unit.out
unit &
unit_pid=$!

readies() { grep -c 'READY=1' "$NOTIFY_LOG"; }
lives() { grep -c "^$ID $DEV\$" /tmp/unit.out; }

# wait_live N: the daemon's N-th start is live: it printed `ID PATH` (and sent
# its N-th READY=1); /dev/ublkb0 is LIVE then. Sets PID from the run record.
wait_live() {
    _i=0
    while [ "$(lives)" -lt "$1" ] || { [ -n "$NOTIFY" ] && [ "$(readies)" -lt "$1" ]; }; do
        _i=$((_i + 1))
        if [ "$_i" -gt 1200 ] || ! kill -0 "$unit_pid" 2>/dev/null; then
            cat /tmp/unit.exits
            tail -30 "$OUT/daemon.log"
            xt_fail "start $1 of the daemon did not get live (exits: $(tr '\n' ' ' </tmp/unit.exits))"
        fi
        sleep 0.1
    done
    [ -b "$DEV" ] || xt_fail "start $1: READY=1 but $DEV is not a block device"
    pcache-ublk list >/tmp/list.txt 2>&1
    grep -Eq "^$ID +$DEV +LIVE " /tmp/list.txt ||
        { cat /tmp/list.txt; xt_fail "start $1: READY=1 but device $ID is not LIVE"; }
    PID=$(sed -n 's/^ *"pid": *\([0-9][0-9]*\).*/\1/p' "$REC" | head -1)
    [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null || xt_fail "start $1: no running daemon in $REC"
    xt_log "start $1 is live: daemon pid $PID, $(readies 2>/dev/null) READY=1 so far"
}

wait_live 1
if [ -n "$NOTIFY" ]; then
    grep -q "MAINPID=$PID" "$NOTIFY_LOG" || { cat "$NOTIFY_LOG"; xt_fail "no MAINPID=$PID sent"; }
    grep -q "STATUS=serving $DEV" "$NOTIFY_LOG" || { cat "$NOTIFY_LOG"; xt_fail "no STATUS=serving $DEV"; }
fi

# While the daemon runs, another `add --recover-if-exists` is refused and
# leaves the device alone.
if pcache-ublk add --id "$ID" --recover-if-exists --cache "$PMEM" --backing "$BACKING" \
    >/tmp/second.out 2>&1; then
    cat /tmp/second.out
    xt_fail "a second add --recover-if-exists succeeded while the daemon runs"
fi
cat /tmp/second.out
grep -q "is running" /tmp/second.out || xt_fail "the refusal does not say the daemon is running"

cat >/tmp/unit.fio <<JOB
[global]
filename=$DEV
direct=1
ioengine=libaio
iodepth=16
rw=randwrite
bsrange=4k-128k
blockalign=4k
size=96m
sync=1
verify=crc32c
verify_fatal=1
[crash]
JOB
fio /tmp/unit.fio --output="$OUT/fio.txt" &
fio_pid=$!

kills=0
for start in 1 2; do
    sleep 4
    kill -0 "$fio_pid" 2>/dev/null || break
    kill -9 "$PID"
    kills=$((kills + 1))
    xt_log "SIGKILL to the daemon (pid $PID) during fio"
    wait_live $((start + 1))
done
[ "$kills" -ge 1 ] || xt_fail "fio finished before the first kill: nothing was tested"
i=0
while kill -0 "$fio_pid" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -gt 4800 ] && xt_fail "fio is stuck 8 min after the last recovery"
    sleep 0.1
done
wait "$fio_pid" || { cat "$OUT/fio.txt"; xt_fail "fio write+verify failed across $kills daemon kills"; }
grep -q 'err= *0' "$OUT/fio.txt" || { cat "$OUT/fio.txt"; xt_fail "fio reported an error"; }
xt_log "fio write+verify passed across $kills SIGKILLs, each recovered by the restart"
[ "$(grep -c ' 137$' /tmp/unit.exits)" = "$kills" ] ||
    { cat /tmp/unit.exits; xt_fail "the daemon exits are not the $kills kills"; }

# A clean stop: exit 0, so the loop does not restart it.
pcache-ublk del -n "$ID" || xt_fail "pcache-ublk del -n $ID exited $?"
i=0
while kill -0 "$unit_pid" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -gt 600 ] && xt_fail "the supervisor loop still runs 60 s after del"
    sleep 0.1
done
wait "$unit_pid" || { cat /tmp/unit.exits; xt_fail "the last daemon did not exit 0 after del"; }
cat /tmp/unit.exits
[ "$(wc -l </tmp/unit.exits)" = $((kills + 1)) ] || xt_fail "the daemon was started more often than killed + 1"
[ ! -e "/dev/ublkc$ID" ] || xt_fail "device $ID still exists after del"
if [ -n "$NOTIFY" ]; then
    cp "$NOTIFY_LOG" "$OUT/notify.log"
    [ "$(readies)" = $((kills + 1)) ] || xt_fail "$(readies) READY=1 for $((kills + 1)) starts"
    grep -q 'STOPPING=1' "$NOTIFY_LOG" || xt_fail "no STOPPING=1 after del"
    grep -q 'STATUS=recovering ublk device' "$NOTIFY_LOG" || xt_fail "no STATUS=recovering after a restart"
    kill "$syslogd_pid" 2>/dev/null
fi

# Every byte fio wrote is served again by a new device on the same cache (the
# flag adds when there is nothing to recover).
xt_ublk_add --id "$ID" --recover-if-exists --cache "$PMEM" --backing "$BACKING"
[ "$UBLK_DEV" = "$DEV" ] || xt_fail "add --id $ID gave $UBLK_DEV"
fio /tmp/unit.fio --verify_only=1 --output="$OUT/fio-verify.txt" ||
    { cat "$OUT/fio-verify.txt"; xt_fail "fio verify after the clean stop and a new add"; }
xt_log "fio's data reads back after the clean stop"
xt_ublk_del
xt_partial_end
