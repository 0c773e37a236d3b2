# Our host tools on the kernel-written image (extracted pmem0 region).
xt_need pcache-fsck pcache-dump
pcache-fsck "$PMEM0_IMG" >"$OUT/fsck.txt" 2>&1
rc=$?
cat "$OUT/fsck.txt"
[ "$rc" = 0 ] || xt_fail "pcache-fsck exited $rc on the kernel's image"
pcache-dump "$PMEM0_IMG" >"$OUT/dump.txt" || xt_fail "pcache-dump exited $?"
head -40 "$OUT/dump.txt"
