xt_log "$(wc -l <"$OUT/done.txt") chunks were fsync'd before the power cut"
if xt_have pcache-fsck; then
    xt_fsck "$PMEM0_IMG"
else
    xt_partial "pcache-fsck after the power cut: $(xt_why_not pcache-fsck)"
fi
