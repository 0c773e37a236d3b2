# Our host tools on the kernel-written image (extracted pmem0 region). Parts
# whose tool is not built yet are noted and the case ends as SKIP (partial).
if xt_have pcache-fsck; then
    xt_fsck "$PMEM0_IMG"
else
    xt_partial "pcache-fsck: $(xt_why_not pcache-fsck)"
fi
if xt_have pcache-dump; then
    xt_check_dump_status "$OUT/dmsetup-status-last.txt"
else
    xt_partial "pcache-dump: $(xt_why_not pcache-dump)"
fi
if xt_have pcache-replay; then
    # The backing is all zeros where the kernel wrote (checked in boot 1),
    # so the export must hold exactly the kernel's dirty data there.
    pcache-replay --cache "$PMEM0_IMG" --backing "$BACKING_IMG" --export "$CASE_DIR/export.img" \
        >"$OUT/replay.txt" 2>&1 || { cat "$OUT/replay.txt"; xt_fail "pcache-replay --export exited non-zero"; }
    XT_DD_IFLAG=
    while read -r seed off len; do
        xt_check_pattern "$CASE_DIR/export.img" "$seed" "$off" "$len" "pcache-replay --export"
    done <"$OUT/expect.txt"
    rm -f "$CASE_DIR/export.img"
    xt_log "pcache-replay --export presents the kernel's data"
else
    xt_partial "pcache-replay: $(xt_why_not pcache-replay)"
fi
