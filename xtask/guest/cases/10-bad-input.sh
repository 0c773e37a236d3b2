# xtask: timeout=600
# xtask: needs=pcache-mkfs needs=pcache-fsck needs=pcache-dump needs=pcache-replay needs=pcache-ublk:add,del,list
# Bad input: pcache-ublk (and pcache-mkfs) must refuse, with a clear error,
# before creating anything, and leave the images unchanged:
#   an unformatted cache device; a too-small device; a data_crc mismatch; a
#   cache already served by another pcache-ublk; a cache the kernel's
#   dm-pcache holds; a superblock with a bad CRC; a missing device.
# One writer per cache: while a pcache-ublk (or the kernel) holds the cache,
# every tool that writes (mkfs --force, fsck --repair/-y/-p, replay
# --writeback) is refused naming the holder, with the whole cache device
# byte-identical; replay's read-only modes are refused without --force-live;
# dump and fsck run with a warning that the cache is live.
xt_need pcache-mkfs pcache-fsck pcache-dump pcache-replay
xt_need_sub pcache-ublk add del list
ublk_count() { ls /dev/ublkb* 2>/dev/null | wc -l; }
meta_md5() { dd if="$PMEM" bs=1M count=20 2>/dev/null | md5sum | cut -d' ' -f1; }
all_md5() { md5sum <"$PMEM" | cut -d' ' -f1; }
# expect_refused WHAT CMD...: CMD must exit non-zero with a message, create no
# ublk device, and leave the first 20 MiB of $PMEM unchanged (unless
# BUSY=1: then the cache's current owner may be writing to it).
expect_refused() {
    _what=$1
    shift
    _n=$(ublk_count)
    _m=$(meta_md5)
    "$@" >/tmp/refused.out 2>&1 &
    _p=$!
    _i=0
    while kill -0 "$_p" 2>/dev/null; do
        _i=$((_i + 1))
        [ "$_i" -gt 300 ] && { kill -9 "$_p"; xt_fail "$_what: \`$*\` hangs (30 s)"; }
        sleep 0.1
    done
    wait "$_p" && { cat /tmp/refused.out; xt_fail "$_what: \`$*\` succeeded"; }
    [ -s /tmp/refused.out ] || xt_fail "$_what: \`$*\` failed without a message"
    xt_log "$_what: refused: $(head -3 /tmp/refused.out | tr '\n' ' ')"
    grep -qiE 'panicked|RUST_BACKTRACE' /tmp/refused.out && xt_fail "$_what: it panicked"
    [ "$(ublk_count)" = "$_n" ] || xt_fail "$_what: a ublk device was created anyway"
    [ -n "$BUSY" ] || [ "$(meta_md5)" = "$_m" ] || xt_fail "$_what: the cache device was changed"
    [ -z "$MSG" ] || grep -qE "$MSG" /tmp/refused.out || xt_fail "$_what: the message does not match /$MSG/: $(cat /tmp/refused.out)"
}
# expect_held WHAT CMD...: a writer refused while the cache is held by an idle
# pcache-ublk: the message names it, and the whole device is byte-identical.
expect_held() {
    _before=$(all_md5)
    BUSY=1 expect_refused "$@"
    [ "$(all_md5)" = "$_before" ] || xt_fail "$1: the held cache changed"
}
# expect_live_read WHAT CMD...: a reader runs on the live cache, says so.
expect_live_read() {
    _what=$1
    shift
    "$@" >/tmp/live.out 2>/tmp/live.err
    _rc=$?
    [ "$_rc" -lt 8 ] || xt_fail "$_what: \`$*\` exited $_rc: $(cat /tmp/live.err)"
    grep -q 'may be torn' /tmp/live.err || xt_fail "$_what: no live warning: $(cat /tmp/live.err)"
    xt_log "$_what: ran (exit $_rc): $(head -1 /tmp/live.err)"
}

expect_refused "unformatted cache" pcache-ublk add --cache "$PMEM" --backing "$BACKING"
expect_refused "missing cache device" pcache-ublk add --cache /dev/nonexistent --backing "$BACKING"
# 256 MiB (< the 512 MiB minimum) of pmem0, through dm-linear (keeps DAX)
dmsetup create small --table "0 524288 linear $PMEM 0" || xt_fail "dmsetup create small"
xt_wait_dev /dev/mapper/small
expect_refused "too-small device (mkfs)" pcache-mkfs /dev/mapper/small
expect_refused "too-small device (add)" pcache-ublk add --cache /dev/mapper/small --backing "$BACKING"
dmsetup remove small

pcache-mkfs "$PMEM" || xt_fail "pcache-mkfs $PMEM exited $?"
expect_refused "mkfs over an existing cache without --force" pcache-mkfs "$PMEM"
expect_refused "data_crc mismatch" pcache-ublk add --cache "$PMEM" --backing "$BACKING" --data-crc
expect_refused "missing backing device" pcache-ublk add --cache "$PMEM" --backing /dev/nonexistent

xt_ublk_add --cache "$PMEM" --backing "$BACKING"
# Written through the cache, then written back, and the daemon left idle (its
# kset flush and writeback settled) before the whole device is hashed.
dd if=/dev/urandom of="$UBLK_DEV" bs=64k count=16 oflag=direct 2>/dev/null || xt_fail "write to $UBLK_DEV"
sync
xt_ublk_wait_clean
sleep 2
MSG="in use by pcache-ublk device $UBLK_ID \\(pid [0-9]+\\)"
expect_held "cache already in use by pcache-ublk" pcache-ublk add --cache "$PMEM" --backing "$BACKING"
expect_held "mkfs --force on a live cache" pcache-mkfs --force "$PMEM"
expect_held "fsck --repair on a live cache" pcache-fsck --repair "$PMEM"
expect_held "fsck -y on a live cache" pcache-fsck -y "$PMEM"
expect_held "fsck -p on a live cache" pcache-fsck -p "$PMEM"
expect_held "replay --writeback on a live cache" pcache-replay --cache "$PMEM" --backing "$BACKING" --writeback
expect_held "replay (report) on a live cache" pcache-replay --cache "$PMEM" --backing "$BACKING"
expect_held "replay --export on a live cache" pcache-replay --cache "$PMEM" --backing "$BACKING" --export /tmp/export.img
MSG=
[ -e /tmp/export.img ] && xt_fail "replay --export wrote its file while refusing"
_before=$(all_md5)
expect_live_read "dump on a live cache" pcache-dump "$PMEM"
expect_live_read "fsck on a live cache" pcache-fsck "$PMEM"
expect_live_read "fsck --json on a live cache" pcache-fsck --json "$PMEM"
grep -q '"live"' /tmp/live.out || xt_fail "fsck --json has no live field"
expect_live_read "replay --force-live" pcache-replay --cache "$PMEM" --backing "$BACKING" --force-live
[ "$(all_md5)" = "$_before" ] || xt_fail "the readers changed the live cache"
xt_ublk_del

xt_pcache_create pc0 false
BUSY=1
MSG="in use by the kernel"
expect_refused "cache held by the kernel's dm-pcache" pcache-ublk add --cache "$PMEM" --backing "$BACKING"
expect_refused "mkfs --force on a cache dm-pcache holds" pcache-mkfs --force "$PMEM"
expect_refused "fsck --repair on a cache dm-pcache holds" pcache-fsck --repair "$PMEM"
expect_refused "replay --writeback on a cache dm-pcache holds" pcache-replay --cache "$PMEM" --backing "$BACKING" --writeback
MSG=
BUSY=
dmsetup remove pc0

# Flip a byte of seg_num: the superblock CRC no longer matches.
b=$(od -An -tu1 -j 4112 -N1 "$PMEM" | tr -d ' ')
printf "$(printf '\\%03o' $(((b + 1) % 256)))" | dd of="$PMEM" bs=1 seek=4112 conv=notrunc 2>/dev/null
expect_refused "superblock CRC mismatch" pcache-ublk add --cache "$PMEM" --backing "$BACKING"
if dmsetup create bad --table "0 $BACKING_SECTORS pcache $PMEM $BACKING 4 cache_mode writeback data_crc false" 2>/dev/null; then
    dmsetup remove bad
    xt_fail "the kernel accepted the superblock with a bad CRC (the test corrupted it wrongly?)"
fi
dmsetup remove bad 2>/dev/null
[ "$(pcache-ublk list 2>/dev/null | grep -c ublkb)" = 0 ] || xt_fail "pcache-ublk list shows devices left over"
xt_log "bad input OK"
