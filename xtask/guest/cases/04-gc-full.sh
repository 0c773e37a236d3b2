# xtask: skip=needs pcache-ublk (not implemented yet)
# xtask: pmem_mb=514 timeout=600
# Plan: the smallest cache (514 MiB NVDIMM -> 512 MiB /dev/pmem0 -> 31
# segments); write more than the cache holds so GC must reclaim segments
# while writeback runs; fio verify over the whole span; no stall, no error.
