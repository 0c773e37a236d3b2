# Host side: format the host's copy of /dev/pmem0 (a regular file) with
# data_crc and the default gc_percent; the harness writes it back into the
# NVDIMM file for boot 2.
if xt_have pcache-fsck; then
    xt_fsck "$PMEM0_IMG"
else
    xt_log "pcache-fsck: $(xt_why_not pcache-fsck); not checked"
fi
if xt_have pcache-dump; then
    xt_check_dump_status "$OUT/dmsetup-status-last.txt"
fi
pcache-mkfs --force --data-crc "$PMEM0_IMG" >"$OUT/mkfs2.txt" 2>&1
rc=$?
cat "$OUT/mkfs2.txt"
[ "$rc" = 0 ] || xt_fail "pcache-mkfs --force --data-crc on the host image exited $rc"
[ "$(xt_hex64 "$PMEM0_IMG" 4104)" = 65b05efa96c596ef ] || xt_fail "no superblock after host pcache-mkfs"
