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

[ "$XT_SIDE" = host ] && return 0

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

# xt_pcache_create NAME [data_crc]: the kernel's dm-pcache over $PMEM/$BACKING.
xt_pcache_create() {
    dmsetup create "$1" --table \
        "0 $BACKING_SECTORS pcache $PMEM $BACKING 4 cache_mode writeback data_crc ${2:-false}" ||
        xt_fail "dmsetup create $1 (pcache)"
    xt_wait_dev "/dev/mapper/$1" && [ -b "/dev/mapper/$1" ] || xt_fail "/dev/mapper/$1 is not a block device"
}

# Field N (1-based) of `dmsetup status NAME`. For pcache: 4 sb_flags 5 seg_total
# 6 cache_segs 7 segs_used 8 gc_percent 9 cache_flags 10 key_head 11 dirty_tail 12 key_tail
xt_dm_field() { dmsetup status "$1" | awk -v n="$2" '{print $n}'; }

# --shell: run a case script by hand.
xt_run() { (cd /tmp && . "/xtask/cases/$CASE/boot${1:-$BOOT}.sh"); echo "XT: rc=$?"; }

xt_shell() {
    echo "XT: shell. Case scripts: /xtask/cases/$CASE/ ; xt_run [BOOT] runs one;"
    echo "XT: helpers: /xtask/lib.sh ; host dir: $OUT ; exit (or Ctrl-D) powers off."
    ENV=/xtask/lib.sh setsid cttyhack sh
}
