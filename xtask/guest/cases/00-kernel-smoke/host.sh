# Host side, after the VM exited: the NVDIMM file holds the kernel's cache.
# fsdax puts /dev/pmem0 at 2 MiB into the file (pfn info block at 4 KiB);
# the superblock (docs/format.md: at pmem0+4096: le32 crc, le32 flags, le64
# magic, le32 seg_num) must be there. If our tools are built: pcache-fsck is
# clean and pcache-dump's status summary equals the kernel's last status.
[ "$PMEM0_OFFSET" = 2097152 ] || xt_fail "/dev/pmem0 starts at $PMEM0_OFFSET in the NVDIMM file, not 2 MiB"
magic=$(xt_hex64 "$PMEM_IMG" $((PMEM0_OFFSET + 4104)))
[ "$magic" = 65b05efa96c596ef ] || xt_fail "superblock magic at NVDIMM file offset 2 MiB + 4104 is '$magic'"
[ "$(xt_hex64 "$PMEM0_IMG" 4104)" = "$magic" ] || xt_fail "extracted pmem0.img differs from the NVDIMM file"
flags=$(xt_u32 "$PMEM0_IMG" 4100)
[ "$flags" = 0 ] || xt_fail "superblock flags $flags (expected 0 on little-endian)"
seg_num=$(xt_u32 "$PMEM0_IMG" 4112)
want=$(((PMEM0_BYTES - 20480) / 16777216))
[ "$seg_num" = "$want" ] || xt_fail "seg_num $seg_num, expected $want for $PMEM0_BYTES bytes"
set -- $(cat "$OUT/dmsetup-status-last.txt")
[ "$5" = "$seg_num" ] || xt_fail "dmsetup status seg_total $5 != superblock seg_num $seg_num"
xt_log "superblock OK: magic $magic, seg_num $seg_num, pmem0 at NVDIMM file offset $PMEM0_OFFSET"
xt_log "kernel's last status: $(xt_status_info "$OUT/dmsetup-status-last.txt")"
# The data went through the cache: the dd pattern is in the cache's data area.
grep -qaF "pcache-xtask-smoke-0123456789abcdef" "$PMEM0_IMG" || xt_fail "the written pattern is not in pmem0.img"
if xt_have pcache-fsck; then
    xt_fsck "$PMEM0_IMG"
else
    xt_log "pcache-fsck: $(xt_why_not pcache-fsck); not checked"
fi
if xt_have pcache-dump; then
    xt_check_dump_status "$OUT/dmsetup-status-last.txt"
else
    xt_log "pcache-dump: $(xt_why_not pcache-dump); not checked"
fi
