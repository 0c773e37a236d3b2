n=$(wc -l <"$OUT/done.txt")
[ "$n" -ge 30 ] || xt_fail "only $n chunks logged before the power cut"
xt_log "$n chunks were fsync'd before the power cut"
if xt_have pcache-fsck; then
    xt_fsck "$PMEM0_IMG"
else
    xt_log "pcache-fsck: $(xt_why_not pcache-fsck); not checked"
fi
