# qemu-test helpers (xtask/guest/lib.sh), POSIX sh. Sourced by the guest's
# /init (busybox ash) before a case script runs, and by `sh` on the host before
# a host hook runs (XT_SIDE=host). See docs/qemu.md for the variables.
#
# Guest variables:  PMEM=/dev/pmem0  BACKING=/dev/vda  OUT=/mnt/host (9p, the
#   case's host dir `out/`)  PMEM_SECTORS  BACKING_SECTORS  CASE  BOOT  NBOOTS
# Host variables:   OUT  PMEM_IMG  PMEM0_IMG  PMEM0_OFFSET  PMEM0_BYTES
#   BACKING_IMG  CASE  CASE_DIR  BOOT  NBOOTS  XT_BIN  REPO

XT_SIDE=${XT_SIDE:-guest}
XT_RC_SKIP=77
XT_RC_POWERCUT=100

# ---------------------------------------------------------------- both sides
xt_log() { echo "XT: $*"; }
# Fail the case (the message is shown in the summary log tail).
xt_fail() { echo "FAIL: $*"; exit 1; }
# Skip the case: reported as SKIP (not a failure) with this reason.
xt_skip() { echo "SKIP: $*"; exit "$XT_RC_SKIP"; }
# True if program $1 exists and `$1 --help` exits 0 and prints a usage text
# (an unfinished stub -- `fn main() {}` or one that bails -- does not count).
xt_have() {
    command -v "$1" >/dev/null 2>&1 || return 1
    _h=$("$1" --help 2>&1) || return 1
    case "$_h" in *[Uu]sage*) return 0 ;; esac
    return 1
}
# Skip unless every named program passes xt_have.
xt_need() {
    for _b in "$@"; do
        xt_have "$_b" || xt_skip "needs $_b ($(xt_why_not "$_b"))"
    done
}
# Why xt_have $1 is false, in a few words.
xt_why_not() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "not built"
    elif ! "$1" --help >/dev/null 2>&1; then
        echo "\`$1 --help\` fails: not implemented yet?"
    else
        echo "\`$1 --help\` prints no usage: a stub?"
    fi
}
# xt_need_sub PROG SUB...: skip unless `PROG --help` lists every subcommand SUB
# (a word at the start of a line, as clap prints them).
xt_need_sub() {
    _p=$1
    shift
    xt_need "$_p"
    _h=$("$_p" --help 2>&1)
    for _s in "$@"; do
        printf '%s\n' "$_h" | grep -Eq "^[[:space:]]+$_s([[:space:]]|\$)" ||
            xt_skip "needs \`$_p $_s\` (not in \`$_p --help\`)"
    done
}
# Little-endian integers from a file: xt_u64 FILE OFFSET, xt_u32 FILE OFFSET (decimal),
# xt_hex64 FILE OFFSET (16 hex digits).
xt_u64() { od -An -tu8 -j "$2" -N8 "$1" | tr -d ' \n'; }
xt_u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' \n'; }
xt_hex64() { od -An -tx8 -j "$2" -N8 "$1" | tr -d ' \n'; }
# A deterministic byte pattern: xt_pattern SEED BYTES > file
xt_pattern() { (yes "pcache-xtask-$1-0123456789abcdef" || true) | head -c "$2"; }

# The INFO part of a `dmsetup status` line of pcache (fields 4..12: sb_flags
# seg_num n_segs segs_used gc_percent cache_info_flags key_head dirty_tail key_tail).
xt_status_info() { awk '$3 == "pcache" { print $4, $5, $6, $7, $8, $9, $10, $11, $12; exit }' "$@"; }

# xt_check_dump_status STATUS_FILE [IMAGE]: pcache-dump's status summary of
# IMAGE (default $PMEM0_IMG) must equal the INFO of the `dmsetup status` line
# in STATUS_FILE. pcache-dump's output goes to $OUT/dump.txt.
xt_check_dump_status() {
    _want=$(xt_status_info "$1")
    [ -n "$_want" ] || xt_fail "no pcache status line in $1"
    pcache-dump "${2:-$PMEM0_IMG}" >"$OUT/dump.txt" 2>&1 || xt_fail "pcache-dump exited $? (see dump.txt)"
    if tr -s ' \t' '  ' <"$OUT/dump.txt" | grep -qF -- "$_want"; then
        xt_log "pcache-dump's status summary equals the kernel's: $_want"
    else
        echo "---- pcache-dump output (first 60 lines) ----"
        head -60 "$OUT/dump.txt"
        xt_fail "pcache-dump shows no status summary equal to the kernel's last \`dmsetup status\`: $_want"
    fi
}

# xt_fsck IMAGE: pcache-fsck must exit 0 (clean); output in $OUT/fsck.txt.
xt_fsck() {
    pcache-fsck "$1" >"$OUT/fsck.txt" 2>&1
    _rc=$?
    cat "$OUT/fsck.txt"
    [ "$_rc" = 0 ] || xt_fail "pcache-fsck $1 exited $_rc (0 = clean)"
    xt_log "pcache-fsck: clean"
}

# md5 of LEN_MB MiB at OFF_MB MiB of a device or file: xt_md5 PATH OFF_MB LEN_MB
xt_md5() {
    dd if="$1" bs=1M skip="$2" count="$3" $XT_DD_IFLAG 2>/dev/null | md5sum | cut -d' ' -f1
}
# The md5 of LEN_MB MiB of zeros.
xt_zero_md5() { head -c $(($1 << 20)) /dev/zero | md5sum | cut -d' ' -f1; }
# The md5 of xt_pattern SEED BYTES.
xt_pattern_md5() { xt_pattern "$1" "$2" | md5sum | cut -d' ' -f1; }

# Parts of a case that could not run: noted with xt_partial, and the last step
# turns them into a SKIP (with everything that did run passing) via xt_partial_end.
xt_partial() { echo "$*" >>"$OUT/partial.txt"; xt_log "not checked: $*"; }
xt_partial_end() {
    [ -s "$OUT/partial.txt" ] || return 0
    xt_skip "partly skipped (the rest passed): $(tr '\n' ';' <"$OUT/partial.txt" | sed 's/;$//; s/;/; /g')"
}

[ "$XT_SIDE" = host ] && return 0
XT_DD_IFLAG=iflag=direct
# fio's progress line would flood the serial console.
fio() { command fio --eta=never "$@"; }

# ---------------------------------------------------------------- guest only
CASE=${xt_case:-}
BOOT=${xt_boot:-1}
NBOOTS=${xt_nboots:-1}
PMEM=${PMEM:-/dev/pmem0}
BACKING=${BACKING:-/dev/vda}
OUT=${OUT:-/tmp/out}
export DM_DISABLE_UDEV=1 # no udev: libdevmapper creates /dev/mapper nodes itself

xt_uptime() { cut -d' ' -f1 /proc/uptime; }

# xt_wait_dev PATH [TENTHS]: wait (default 5 s) for a device node.
xt_wait_dev() {
    _i=0
    while [ ! -e "$1" ]; do
        _i=$((_i + 1))
        [ "$_i" -gt "${2:-50}" ] && return 1
        sleep 0.1
    done
}

xt_mount_share() {
    if [ -n "$xt_share" ]; then
        modprobe 9pnet_virtio && modprobe 9p && mkdir -p /mnt/host &&
            mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none "$xt_share" /mnt/host &&
            OUT=/mnt/host && return 0
        echo "XT: 9p mount of $xt_share failed; OUT=$OUT (not visible on the host)"
    fi
    mkdir -p "$OUT"
}

# Load the modules, wait for the devices, check /dev/pmem0 is fsdax with DAX.
# In template mode, first convert the raw NVDIMM namespace to fsdax (once per
# template image: the pfn info block persists in the image).
xt_setup() {
    for _m in virtio_blk nfit nd_pmem dm_mod dm_pcache dm_writecache ublk_drv; do
        modprobe "$_m" || { echo "FAIL: modprobe $_m"; return 30; }
    done
    xt_wait_dev /dev/pmem0 || { echo "FAIL: no /dev/pmem0"; return 31; }
    xt_wait_dev /dev/vda || { echo "FAIL: no /dev/vda"; return 31; }
    if [ "$xt_mode" = template ]; then
        # The region's default 16 MiB alignment rejects sizes like 514 MiB; 2 MiB
        # (the fsdax page-map alignment) accepts any even size in MiB.
        echo 2097152 >/sys/bus/nd/devices/region0/align ||
            { echo "FAIL: cannot set region0 align"; return 32; }
        ndctl create-namespace -f -e namespace0.0 -m fsdax --map=mem --align=2M >/tmp/ndctl.json ||
            { echo "FAIL: ndctl create-namespace"; return 32; }
        cat /tmp/ndctl.json
        xt_wait_dev /dev/pmem0 || { echo "FAIL: no /dev/pmem0 after ndctl"; return 31; }
        echo $(($(cat /sys/block/pmem0/size) * 512)) >"$OUT/pmem0.bytes"
    fi
    [ "$(cat /sys/block/pmem0/queue/dax 2>/dev/null)" = 1 ] ||
        { echo "FAIL: /dev/pmem0 has no DAX (is the pmem image an fsdax template?)"; return 33; }
    PMEM_SECTORS=$(blockdev --getsz "$PMEM")
    BACKING_SECTORS=$(blockdev --getsz "$BACKING")
    export PMEM BACKING OUT PMEM_SECTORS BACKING_SECTORS CASE BOOT NBOOTS
    echo "XT: ready: PMEM=$PMEM ($PMEM_SECTORS sectors) BACKING=$BACKING ($BACKING_SECTORS sectors) uptime=$(xt_uptime)"
}

# Fail if the kernel logged a warning, BUG or oops (after a passing script).
# A case that expects some can `touch /tmp/xt-allow-kernel-warnings`.
xt_check_dmesg() {
    [ -e /tmp/xt-allow-kernel-warnings ] && return 0
    if dmesg | grep -E 'WARNING:|BUG:|Oops|Call Trace:|general protection' >/tmp/xt-kwarn; then
        echo "FAIL: the kernel logged problems:"
        head -20 /tmp/xt-kwarn
        return 1
    fi
}

# Report rc to the host and power off. Never returns.
xt_report() {
    dmesg >"$OUT/dmesg-boot$BOOT.txt" 2>/dev/null
    echo "XT: done: uptime=$(xt_uptime)"
    echo "XTASK_RC=$1"
    sync
    umount /mnt/host 2>/dev/null
    xt_port "$1"
    poweroff -f
}

# Write rc to isa-debug-exit (port 0xf4): QEMU exits at once with (rc<<1)|1.
xt_port() {
    printf "$(printf '\\%03o' $(($1 & 255)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
}

# Cut the power now: no sync, no unmount; QEMU exits at once. The boot counts as
# passed (a later boot or host hook checks the aftermath). Use from a background
# job to cut in the middle of I/O:  (sleep 2; xt_powercut) &
xt_powercut() {
    echo "XT: POWER CUT at uptime $(xt_uptime)"
    echo "XTASK_RC=$XT_RC_POWERCUT"
    xt_port "$XT_RC_POWERCUT"
    sleep 10
}

# xt_pcache_create NAME [DATA_CRC [CACHE [BACKING]]]: the kernel's dm-pcache
# (default: data_crc false over $PMEM and $BACKING), then waits for /dev/mapper/NAME.
xt_pcache_create() {
    _be=${4:-$BACKING}
    _sz=$(blockdev --getsz "$_be") || xt_fail "blockdev --getsz $_be"
    dmsetup create "$1" --table \
        "0 $_sz pcache ${3:-$PMEM} $_be 4 cache_mode writeback data_crc ${2:-false}" ||
        xt_fail "dmsetup create $1 (pcache over ${3:-$PMEM} + $_be)"
    xt_wait_dev "/dev/mapper/$1" && [ -b "/dev/mapper/$1" ] || xt_fail "/dev/mapper/$1 is not a block device"
}

# Field N (1-based) of `dmsetup status NAME`. For pcache: 4 sb_flags 5 seg_total
# 6 cache_segs 7 segs_used 8 gc_percent 9 cache_flags 10 key_head 11 dirty_tail 12 key_tail
xt_dm_field() { dmsetup status "$1" | awk -v n="$2" '{print $n}'; }

# xt_pcache_settle NAME [SECS]: wait (default 60 s) until the kernel's cache
# is clean (dirty_tail == key_head) and two status reads 0.5 s apart agree.
xt_pcache_settle() {
    _n=0
    _prev=
    while :; do
        _st=$(dmsetup status "$1") || return 1
        set -- "$1" "${2:-60}" $_st
        if [ "${12}" = "${13}" ] && [ "$_st" = "$_prev" ]; then
            return 0
        fi
        _n=$((_n + 1))
        [ "$_n" -gt "$(($2 * 2))" ] && { xt_log "not settled after $2 s: $_st"; return 1; }
        _prev=$_st
        sleep 0.5
    done
}

# xt_flakey NAME DEV: a dm-flakey over DEV whose writes always fail (reads
# work): a backing device that writeback cannot drain to.
xt_flakey() {
    modprobe dm_flakey || xt_fail "modprobe dm_flakey"
    dmsetup create "$1" --table "0 $(blockdev --getsz "$2") flakey $2 0 0 1 1 error_writes" ||
        xt_fail "dmsetup create $1 (flakey, error_writes)"
    xt_wait_dev "/dev/mapper/$1" && [ -b "/dev/mapper/$1" ] || xt_fail "/dev/mapper/$1 is not a block device"
}

# xt_write_pattern DEV SEED OFF_MB LEN_MB: deterministic data, O_DIRECT, fsync'd.
xt_write_pattern() {
    xt_pattern "$2" $(($4 << 20)) >/tmp/xt-pat || xt_fail "cannot build the pattern"
    dd if=/tmp/xt-pat of="$1" bs=1M seek="$3" oflag=direct conv=fsync,notrunc 2>/tmp/xt-dd.err ||
        { cat /tmp/xt-dd.err; xt_fail "write of $4 MiB at $3 MiB to $1 failed"; }
    rm -f /tmp/xt-pat
}
# xt_check_pattern DEV SEED OFF_MB LEN_MB [WHAT]: the data reads back.
xt_check_pattern() {
    _w=$(xt_pattern_md5 "$2" $(($4 << 20)))
    _g=$(xt_md5 "$1" "$3" "$4")
    [ "$_w" = "$_g" ] || xt_fail "${5:-data} mismatch: $4 MiB at $3 MiB of $1 (md5 $_g, want $_w)"
}

# Chunk logs for crash tests: xt_chunk_loop DEV FIRST COUNT DONE_FILE writes
# 1 MiB chunk i (pattern seed "chunk-i") at MiB FIRST+i, each O_DIRECT+fsync,
# and appends "i md5" to DONE_FILE only after the fsync returned.
# xt_chunks_verify DEV FIRST DONE_FILE checks that every chunk listed there
# reads back.
xt_chunk_loop() {
    _i=0
    while [ "$_i" -lt "$3" ]; do
        xt_pattern "chunk-$_i" 1048576 >/tmp/xt-chunk
        _m=$(md5sum </tmp/xt-chunk | cut -d' ' -f1)
        # A failed write or fsync (EIO: the device reports writes possibly lost in a
        # daemon crash) is retried once, as an application would; the chunk is logged
        # only after an fsync that succeeded.
        if ! dd if=/tmp/xt-chunk of="$1" bs=1M seek=$(($2 + _i)) oflag=direct conv=fsync,notrunc 2>/tmp/xt-chunk.err; then
            echo "XT: chunk $_i: $(tr '\n' ' ' </tmp/xt-chunk.err): retrying once"
            echo "$_i" >>"$4.retried"
            dd if=/tmp/xt-chunk of="$1" bs=1M seek=$(($2 + _i)) oflag=direct conv=fsync,notrunc 2>/dev/null ||
                { echo "XT: chunk $_i: write failed"; return 1; }
        fi
        echo "$_i $_m" >>"$4"
        _i=$((_i + 1))
    done
}
xt_chunks_verify() {
    _n=0
    while read -r _i _w; do
        _g=$(xt_md5 "$1" $(($2 + _i)) 1)
        [ "$_w" = "$_g" ] || xt_fail "chunk $_i (fsync'd before the crash) does not read back from $1"
        _n=$((_n + 1))
    done <"$3"
    xt_log "all $_n fsync'd chunks read back from $1"
}

# xt_meta_snap DEV FILE: the metadata that activation must not rewrite: the
# superblock, and every segment's seg_info and seg_gen blocks (first 12 KiB).
xt_meta_snap() {
    dd if="$1" bs=4096 skip=1 count=1 2>/dev/null >"$2"
    _segs=$(xt_u32 "$2" 16)
    _s=0
    while [ "$_s" -lt "$_segs" ]; do
        # 20 KiB + s * 16 MiB = 4 KiB blocks 5 + s * 4096
        dd if="$1" bs=4096 skip=$((5 + _s * 4096)) count=3 2>/dev/null >>"$2"
        _s=$((_s + 1))
    done
}
# Sequence byte of cache_info slot N (0 or 1) on DEV.
xt_cache_info_seq() { od -An -tu1 -j $((8192 + $2 * 4096 + 4)) -N1 "$1" | tr -d ' \n'; }

# ---------------------------------------------------------------- pcache-ublk
# The contract with pcache-ublk (issue 6): `add --cache DEV --backing DEV
# [--queues N] [--depth N] [--data-crc]` prints the device id or /dev/ublkbN
# and returns once /dev/ublkbN is live; `del -n ID`; `list`;
# `status -n ID [--json]` (key_head, dirty_tail, key_tail); `set -n ID
# gc_percent N`; `recover -n ID --cache DEV --backing DEV`.

# xt_ublk_add ARGS...: `pcache-ublk add ARGS`; sets UBLK_ID and UBLK_DEV.
xt_ublk_add() {
    _before=$(ls /dev/ublkb* 2>/dev/null)
    pcache-ublk add "$@" >/tmp/xt-ublk-add.out 2>&1
    _rc=$?
    cat /tmp/xt-ublk-add.out
    [ "$_rc" = 0 ] || xt_fail "pcache-ublk add $* exited $_rc"
    UBLK_ID=$(grep -o '/dev/ublkb[0-9]*' /tmp/xt-ublk-add.out | head -1 | sed 's,/dev/ublkb,,')
    if [ -z "$UBLK_ID" ]; then
        UBLK_ID=$(grep -Eo '(^|[^0-9a-z])[0-9]+([^0-9]|$)' /tmp/xt-ublk-add.out | head -1 | tr -dc 0-9)
    fi
    if [ -z "$UBLK_ID" ]; then # the device that appeared
        for _d in /dev/ublkb*; do
            case " $_before " in *" $_d "*) ;; *) [ -b "$_d" ] && UBLK_ID=${_d#/dev/ublkb} ;; esac
        done
    fi
    [ -n "$UBLK_ID" ] || xt_fail "pcache-ublk add printed no device id and no /dev/ublkbN appeared"
    UBLK_DEV=/dev/ublkb$UBLK_ID
    [ -b "$UBLK_DEV" ] || xt_fail "pcache-ublk add returned but $UBLK_DEV is not a block device"
    xt_log "pcache-ublk: device $UBLK_ID is $UBLK_DEV ($(blockdev --getsz "$UBLK_DEV") sectors)"
}

# xt_ublk_del [ID]: `pcache-ublk del -n ID` and wait until the device is gone.
xt_ublk_del() {
    _id=${1:-$UBLK_ID}
    pcache-ublk del -n "$_id" || xt_fail "pcache-ublk del -n $_id exited $?"
    _i=0
    while [ -e "/dev/ublkb$_id" ] || [ -e "/dev/ublkc$_id" ]; do
        _i=$((_i + 1))
        [ "$_i" -gt 100 ] && xt_fail "/dev/ublkb$_id still there 10 s after del"
        sleep 0.1
    done
}

# xt_ublk_status [ID]: `status --json` into /tmp/xt-status.json; sets
# UBLK_KEY_HEAD, UBLK_DIRTY_TAIL, UBLK_KEY_TAIL (as printed: "S:O" or a JSON
# object). Falls back to a kernel-style `S:O S:O S:O` triple in plain `status`.
xt_ublk_status() {
    _id=${1:-$UBLK_ID}
    pcache-ublk status -n "$_id" --json >/tmp/xt-status.json 2>&1 ||
        { cat /tmp/xt-status.json; xt_fail "pcache-ublk status -n $_id --json exited $?"; }
    UBLK_KEY_HEAD=$(xt_json_val /tmp/xt-status.json key_head)
    UBLK_DIRTY_TAIL=$(xt_json_val /tmp/xt-status.json dirty_tail)
    UBLK_KEY_TAIL=$(xt_json_val /tmp/xt-status.json key_tail)
    if [ -z "$UBLK_KEY_HEAD" ] || [ -z "$UBLK_DIRTY_TAIL" ] || [ -z "$UBLK_KEY_TAIL" ]; then
        _t=$(pcache-ublk status -n "$_id" 2>&1 |
            grep -Eo '[0-9]+:[0-9]+[[:space:]]+[0-9]+:[0-9]+[[:space:]]+[0-9]+:[0-9]+' | tail -1)
        [ -n "$_t" ] || {
            cat /tmp/xt-status.json
            xt_fail "pcache-ublk status shows no key_head/dirty_tail/key_tail"
        }
        set -- $_t
        UBLK_KEY_HEAD=$1 UBLK_DIRTY_TAIL=$2 UBLK_KEY_TAIL=$3
    fi
}

# The raw JSON value of the (last) "KEY": a string, a flat object or a scalar.
xt_json_val() {
    tr -d '\n' <"$1" |
        sed -nE 's/.*"'"$2"'"[[:space:]]*:[[:space:]]*("[^"]*"|\{[^}]*\}|[^,}]*).*/\1/p' |
        tr -d ' "'
}
# The segment of a position as printed ("S:O", {"seg":S,...} or [S,O]): its first number.
xt_pos_seg() { echo "$1" | grep -Eo '[0-9]+' | head -1; }

# xt_ublk_wait_clean [ID] [SECS]: wait (default 60 s) until dirty_tail == key_head.
xt_ublk_wait_clean() {
    _i=0
    while :; do
        xt_ublk_status "${1:-$UBLK_ID}"
        [ "$UBLK_DIRTY_TAIL" = "$UBLK_KEY_HEAD" ] && return 0
        _i=$((_i + 1))
        [ "$_i" -gt "$((${2:-60} * 2))" ] && {
            xt_log "not clean after ${2:-60} s: key_head $UBLK_KEY_HEAD dirty_tail $UBLK_DIRTY_TAIL"
            return 1
        }
        sleep 0.5
    done
}

# pid of the pcache-ublk daemon serving ID (or of the only one running).
xt_ublk_pid() { pidof pcache-ublk | awk '{print $1}'; }

# --shell: run a case script by hand.
xt_run() { (cd /tmp && . "/xtask/cases/$CASE/boot${1:-$BOOT}.sh"); echo "XT: rc=$?"; }

xt_shell() {
    echo "XT: shell. Case scripts: /xtask/cases/$CASE/ ; xt_run [BOOT] runs one;"
    echo "XT: helpers: /xtask/lib.sh ; host dir: $OUT ; exit (or Ctrl-D) powers off."
    ENV=/xtask/lib.sh setsid cttyhack sh
}

# Filesystem load for power cuts: xt_fs_load MNT LOG N writes N files (4 KiB..1 MiB,
# content from xt_pattern seeded by the name) into MNT/d0..d7, with metadata churn
# (scratch files created, renamed, removed) between them. After every 8 files a
# global `sync` returns and only then are those files appended to LOG ("path md5"):
# what must survive a power cut. xt_fs_verify MNT LOG: every logged file reads back.
xt_fs_load() {
    _i=0
    : >/tmp/xt-fs-batch
    while [ "$_i" -lt "$3" ]; do
        _d="d$((_i % 8))"
        mkdir -p "$1/$_d" || return 1
        _kb=$(((_i * 7919 % 256 + 1) * 4))
        xt_pattern "f$_i" $((_kb * 1024)) >"$1/$_d/f$_i" || return 1
        echo "$_d/f$_i $(md5sum <"$1/$_d/f$_i" | cut -d' ' -f1)" >>/tmp/xt-fs-batch
        echo "$_i" >"$1/tmp.$_i" && mv "$1/tmp.$_i" "$1/tmp.r$_i" || return 1
        [ $((_i % 3)) = 0 ] && rm -f "$1/tmp.r$((_i - 3))"
        _i=$((_i + 1))
        if [ $((_i % 8)) = 0 ]; then
            sync || return 1
            cat /tmp/xt-fs-batch >>"$2"
            : >/tmp/xt-fs-batch
        fi
    done
}
xt_fs_verify() {
    _n=0
    while read -r _f _w; do
        _g=$(md5sum <"$1/$_f" 2>/dev/null | cut -d' ' -f1)
        [ "$_w" = "$_g" ] || xt_fail "$_f (synced before the power cut) does not read back (md5 ${_g:-none}, want $_w)"
        _n=$((_n + 1))
    done <"$2"
    xt_log "all $_n synced files read back from $1"
}
# xt_fs_wait LOG LINES SECS: wait until LOG has LINES lines.
xt_fs_wait() {
    _i=0
    while [ "$(wc -l <"$1")" -lt "$2" ]; do
        _i=$((_i + 1))
        [ "$_i" -gt $(($3 * 10)) ] && xt_fail "not $2 files synced in $3 s"
        sleep 0.1
    done
}

# xt_fio_job FILE DEV OFFSET_MB SIZE_MB SEED: random writes with verify. The same job
# on another DEV with --verify_only checks what it wrote, there.
xt_fio_job() {
    cat >"$1" <<JOB
[global]
filename=$2
direct=1
ioengine=libaio
rw=randwrite
bsrange=4k-256k
blockalign=4k
verify=crc32c
verify_fatal=1
randseed=$5
iodepth=8
[w]
offset=$3m
size=$4m
JOB
}

# xt_wait_dead PID: wait (10 s at most) until a killed process is gone.
xt_wait_dead() {
    _i=0
    while kill -0 "$1" 2>/dev/null; do
        _i=$((_i + 1))
        [ "$_i" -gt 100 ] && xt_fail "process $1 survives SIGKILL for 10 s"
        sleep 0.1
    done
}
