# Host side: the pcache superblock in the pmem0 region of the NVDIMM file
# (A.2 of upstream-format.md: at pmem0+4096: le32 crc, le32 flags, le64 magic,
# le32 seg_num), and seg_num against the size and `dmsetup status`.
magic=$(xt_hex64 "$PMEM0_IMG" 4104)
[ "$magic" = 65b05efa96c596ef ] || xt_fail "superblock magic at pmem0+4104 is '$magic'"
flags=$(xt_u32 "$PMEM0_IMG" 4100)
[ "$flags" = 0 ] || xt_fail "superblock flags $flags (expected 0 on little-endian)"
seg_num=$(xt_u32 "$PMEM0_IMG" 4112)
want=$(((PMEM0_BYTES - 20480) / 16777216))
[ "$seg_num" = "$want" ] || xt_fail "seg_num $seg_num, expected $want for $PMEM0_BYTES bytes"
status=$(cat "$OUT/dmsetup-status.txt")
set -- $status
[ "$5" = "$seg_num" ] || xt_fail "dmsetup status seg_total $5 != superblock seg_num $seg_num"
xt_log "superblock OK: magic $magic, seg_num $seg_num, pmem0 at file offset $PMEM0_OFFSET"
xt_log "dmsetup status: $status"
if xt_have pcache-fsck; then
    pcache-fsck "$PMEM0_IMG" || xt_fail "pcache-fsck rejects the kernel-formatted image (rc $?)"
fi
