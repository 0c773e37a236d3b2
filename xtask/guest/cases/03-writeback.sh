# xtask: timeout=600
# xtask: needs=pcache-mkfs needs=pcache-ublk:add,del,status
# Writeback: write known data through pcache-ublk, wait until its status
# shows a clean cache (dirty_tail == key_head), stop it, and compare the
# backing device directly with what was written.
xt_need pcache-mkfs
xt_need_sub pcache-ublk add del status
pcache-mkfs "$PMEM" || xt_fail "pcache-mkfs $PMEM exited $?"
xt_ublk_add --cache "$PMEM" --backing "$BACKING"
for spec in "a 0 16" "b 100 8" "c 1000 4" "d 2000 1"; do
    set -- $spec
    xt_write_pattern "$UBLK_DEV" "$1" "$2" "$3"
done
# small unaligned-in-time writes too: 4 KiB blocks into the middle of extent a
dd if=/dev/urandom of=/tmp/rnd bs=4k count=64 2>/dev/null
dd if=/tmp/rnd of="$UBLK_DEV" bs=4k seek=1000 oflag=direct conv=fsync,notrunc 2>/dev/null || xt_fail "4 KiB writes"
want_rnd=$(md5sum </tmp/rnd | cut -d' ' -f1)
xt_ublk_status
xt_log "written: key_head $UBLK_KEY_HEAD dirty_tail $UBLK_DIRTY_TAIL"
xt_ublk_wait_clean "$UBLK_ID" 120 || xt_fail "the cache did not become clean within 120 s"
xt_log "clean: key_head $UBLK_KEY_HEAD dirty_tail $UBLK_DIRTY_TAIL"
xt_ublk_del
# The backing alone now holds everything.
xt_check_pattern "$BACKING" b 100 8 "backing"
xt_check_pattern "$BACKING" c 1000 4 "backing"
xt_check_pattern "$BACKING" d 2000 1 "backing"
got=$(dd if="$BACKING" bs=4k skip=1000 count=64 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$got" = "$want_rnd" ] || xt_fail "backing: the 4 KiB overwrite in extent a is not there"
# extent a outside the overwrite
xt_pattern a $((16 << 20)) >/tmp/a
dd if=/tmp/rnd of=/tmp/a bs=4k seek=1000 conv=notrunc 2>/dev/null
[ "$(md5sum </tmp/a | cut -d' ' -f1)" = "$(xt_md5 "$BACKING" 0 16)" ] || xt_fail "backing: extent a differs"
xt_log "writeback OK: the backing holds exactly what was written"
