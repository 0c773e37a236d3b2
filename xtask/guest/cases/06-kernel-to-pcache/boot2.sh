# Boot 2: pcache-ublk serves the kernel's cache (data_crc) over the real
# backing: it must present exactly the data the kernel acknowledged.
if xt_have pcache-ublk; then
    xt_ublk_add --cache "$PMEM" --backing "$BACKING" --data-crc
    while read -r seed off len; do
        xt_check_pattern "$UBLK_DEV" "$seed" "$off" "$len" "pcache-ublk read of the kernel's data"
    done <"$OUT/expect.txt"
    xt_log "pcache-ublk presents the kernel's dirty data"
    xt_ublk_del
else
    xt_partial "pcache-ublk: $(xt_why_not pcache-ublk)"
fi
xt_partial_end
