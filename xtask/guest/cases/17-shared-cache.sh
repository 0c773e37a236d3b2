# xtask: quick timeout=2400 pmem_mb=1700 backing_mb=1536
# xtask: needs=pcache-shared needs=pcache-fsck needs=pcache-ublk:add,del,recover,list,set,status
# One cache device for three backing devices (issue 15). The backing disk is cut into
# three dm-linear volumes with uuids (their stable identity); /dev/pmem0 becomes a
# shared cache device with caches db, logs (data_crc) and web (writethrough), each
# served by its own pcache-ublk. A backing device that is not the one a cache was
# created for is refused, and so is a cache served twice. web is created and served
# while db and logs run fio (and removing a served cache is refused); fio
# write+verify runs on all three at once; one cache is detached and re-attached while
# the other two run fio; a kill -9 of one daemon is recovered without touching the
# others (their fio keeps verifying); web is detached and removed while the others run
# fio; then, after `del`, pcache-fsck of the whole device is clean and the kernel's
# dm-pcache opens cache logs through the dm-linear table that `pcache-shared dm-table`
# prints and reads every byte back.
xt_need pcache-shared pcache-fsck
xt_need_sub pcache-ublk add del recover list set status

S=$((BACKING_SECTORS / 3))
for i in 1 2 3; do
    dmsetup create "b$i" --uuid "pcache-xt-b$i" --table "0 $S linear $BACKING $(((i - 1) * S))" ||
        xt_fail "dmsetup create b$i"
    xt_wait_dev "/dev/mapper/b$i"
done
pcache-shared format "$PMEM" || xt_fail "pcache-shared format"
pcache-shared create --name db --size 512M --backing /dev/mapper/b1 "$PMEM" ||
    xt_fail "create db"
pcache-shared create --name logs --size 512M --data-crc --backing /dev/mapper/b2 "$PMEM" ||
    xt_fail "create logs"
pcache-shared list "$PMEM" | tee "$OUT/list.txt"
grep -q 'dm-uuid:pcache-xt-b2' "$OUT/list.txt" || xt_fail "the backing identity is not recorded"

# The wrong backing device is refused, saying what differs.
if pcache-ublk add --cache "$PMEM" --name db --backing /dev/mapper/b2 >/tmp/wrong.out 2>&1; then
    xt_fail "cache db was served over the backing device of logs"
fi
cat /tmp/wrong.out
grep -q 'is not the device cache "db" was created for' /tmp/wrong.out ||
    xt_fail "the refusal does not say what differs"

xt_ublk_add --cache "$PMEM" --name db --backing /dev/mapper/b1
D1=$UBLK_ID
xt_ublk_add --cache "$PMEM" --name logs --backing /dev/mapper/b2
D2=$UBLK_ID
xt_log "attach web while db and logs run fio"
xt_fio_job /tmp/p1.fio "/dev/ublkb$D1" 300 32 401
xt_fio_job /tmp/p2.fio "/dev/ublkb$D2" 300 32 402
fio /tmp/p1.fio --output="$OUT/fio-p1.txt" &
p1=$!
fio /tmp/p2.fio --output="$OUT/fio-p2.txt" &
p2=$!
pcache-shared create --name web --size 512M --cache-mode writethrough \
    --backing /dev/mapper/b3 "$PMEM" || xt_fail "create web while the others serve"
xt_ublk_add --cache "$PMEM" --name web --backing /dev/mapper/b3
D3=$UBLK_ID
# A served cache cannot be removed.
if pcache-shared remove --name db "$PMEM" >/tmp/rm.out 2>&1; then
    xt_fail "cache db was removed while it is served"
fi
cat /tmp/rm.out
grep -q 'is in use by' /tmp/rm.out || xt_fail "the refused remove does not say who holds db"
wait "$p1" || { tail -20 "$OUT/fio-p1.txt"; xt_fail "fio on db while web was attached"; }
wait "$p2" || { tail -20 "$OUT/fio-p2.txt"; xt_fail "fio on logs while web was attached"; }
pcache-ublk list | tee "$OUT/ublk-list.txt"
for n in db logs web; do
    grep -q "$PMEM:$n" "$OUT/ublk-list.txt" || xt_fail "pcache-ublk list does not show $PMEM:$n"
done
# The same cache twice: refused (its range is claimed).
if pcache-ublk add --cache "$PMEM" --name db --backing /dev/mapper/b1 >/tmp/twice.out 2>&1; then
    xt_fail "cache db was served twice"
fi
grep -q 'cache db of' /tmp/twice.out || { cat /tmp/twice.out; xt_fail "the second add does not say cache db is held"; }

xt_log "fio write+verify on all three at once"
for i in 1 2 3; do
    eval "dev=/dev/ublkb\$D$i"
    xt_fio_job "/tmp/a$i.fio" "$dev" 0 48 $((100 + i))
    fio "/tmp/a$i.fio" --output="$OUT/fio-all-$i.txt" &
    eval "f$i=\$!"
done
for i in 1 2 3; do
    eval "wait \$f$i" || { tail -20 "$OUT/fio-all-$i.txt"; xt_fail "fio on cache $i"; }
done

xt_log "detach and re-attach logs while db and web run fio"
xt_fio_job /tmp/b1.fio "/dev/ublkb$D1" 100 48 201
xt_fio_job /tmp/b3.fio "/dev/ublkb$D3" 100 48 203
fio /tmp/b1.fio --output="$OUT/fio-b1.txt" &
g1=$!
fio /tmp/b3.fio --output="$OUT/fio-b3.txt" &
g3=$!
xt_ublk_del "$D2"
xt_ublk_add --cache "$PMEM" --name logs --backing /dev/mapper/b2
D2=$UBLK_ID
xt_fio_job /tmp/v2.fio "/dev/ublkb$D2" 0 48 102
fio /tmp/v2.fio --verify_only=1 --output="$OUT/fio-logs-again.txt" ||
    xt_fail "cache logs after detach and re-attach"
wait "$g1" || { tail -20 "$OUT/fio-b1.txt"; xt_fail "fio on db during the detach"; }
wait "$g3" || { tail -20 "$OUT/fio-b3.txt"; xt_fail "fio on web during the detach"; }

xt_log "kill -9 the daemon of web; db and logs keep running"
pid3=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "/run/pcache-ublk/$D3.json" | head -1)
[ -n "$pid3" ] || xt_fail "no pid in the run record of device $D3"
xt_fio_job /tmp/c1.fio "/dev/ublkb$D1" 200 32 301
xt_fio_job /tmp/c2.fio "/dev/ublkb$D2" 200 32 302
fio /tmp/c1.fio --output="$OUT/fio-c1.txt" &
h1=$!
fio /tmp/c2.fio --output="$OUT/fio-c2.txt" &
h2=$!
# A cutoff set online lasts across the recovery (the run record keeps it).
pcache-ublk set -n "$D3" seq_cutoff_read 8M || xt_fail "set seq_cutoff_read"
kill -9 "$pid3"
xt_wait_dead "$pid3"
sleep 1
pcache-ublk recover -n "$D3" --cache "$PMEM" --name web --backing /dev/mapper/b3 ||
    xt_fail "pcache-ublk recover of web"
xt_ublk_status "$D3"
tr -d ' \n' </tmp/xt-status.json | grep -q '"seq_cutoff":{"read":8388608' ||
    { cat /tmp/xt-status.json; xt_fail "the cutoff set online did not survive the recovery"; }
xt_fio_job /tmp/v3.fio "/dev/ublkb$D3" 0 48 103
fio /tmp/v3.fio --verify_only=1 --output="$OUT/fio-web-recovered.txt" ||
    xt_fail "cache web after kill -9 and recover"
xt_fio_job /tmp/v3b.fio "/dev/ublkb$D3" 100 48 203
fio /tmp/v3b.fio --verify_only=1 --output="$OUT/fio-web-recovered-b.txt" ||
    xt_fail "cache web's second region after recover"
wait "$h1" || { tail -20 "$OUT/fio-c1.txt"; xt_fail "fio on db during the kill"; }
wait "$h2" || { tail -20 "$OUT/fio-c2.txt"; xt_fail "fio on logs during the kill"; }

xt_log "detach and remove web while db and logs run fio"
xt_fio_job /tmp/r1.fio "/dev/ublkb$D1" 400 32 501
xt_fio_job /tmp/r2.fio "/dev/ublkb$D2" 400 32 502
fio /tmp/r1.fio --output="$OUT/fio-r1.txt" &
r1=$!
fio /tmp/r2.fio --output="$OUT/fio-r2.txt" &
r2=$!
xt_ublk_del "$D3"
pcache-shared remove --name web "$PMEM" || xt_fail "remove web (writethrough: nothing dirty)"
wait "$r1" || { tail -20 "$OUT/fio-r1.txt"; xt_fail "fio on db while web was removed"; }
wait "$r2" || { tail -20 "$OUT/fio-r2.txt"; xt_fail "fio on logs while web was removed"; }
pcache-shared list "$PMEM" | tee "$OUT/list-after.txt"
grep -q ' web ' "$OUT/list-after.txt" && xt_fail "web is still listed after remove"

xt_log "del all; the kernel opens logs through dm-linear and reads every byte back"
xt_ublk_del "$D1"
xt_ublk_del "$D2"
pcache-fsck "$PMEM" >"$OUT/fsck.txt" 2>&1 || { cat "$OUT/fsck.txt"; xt_fail "pcache-fsck of the shared device"; }
cat "$OUT/fsck.txt"
pcache-shared dm-table --name logs --backing /dev/mapper/b2 "$PMEM" | tee "$OUT/dm-table.sh"
sh -e "$OUT/dm-table.sh" || xt_fail "the printed dmsetup commands"
xt_wait_dev /dev/mapper/logs-pcache
for spec in "0 48 102" "200 32 302" "300 32 402" "400 32 502"; do
    set -- $spec
    xt_fio_job /tmp/k.fio /dev/mapper/logs-pcache "$1" "$2" "$3"
    fio /tmp/k.fio --verify_only=1 --output="$OUT/fio-kernel-$1.txt" ||
        { tail -20 "$OUT/fio-kernel-$1.txt"; xt_fail "the kernel's read of logs at $1 MiB"; }
done
dmsetup remove logs-pcache || xt_fail "dmsetup remove logs-pcache"
dmsetup remove pcache-logs || xt_fail "dmsetup remove pcache-logs"
xt_log "the kernel read back all of logs; the other caches were not touched"
for i in 1 2 3; do dmsetup remove "b$i"; done
