//! The command line of `pcache-ublk`, in the style of rublk: one subcommand per action.
//!
//! Parsing and validation live here (not in `main.rs`) so they are unit-tested. Whatever
//! clap cannot express is checked by [`AddArgs::validate`] and friends, which run before
//! anything is opened or created.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::Tuning;
use crate::error::Error;
use pcache_engine::{CacheMode, SeqCutoff};

/// The ublk driver's limit on hardware queues per device (`UBLK_MAX_NR_QUEUES`).
pub const MAX_QUEUES: u16 = 4096;
/// The ublk driver's limit on the queue depth (`UBLK_MAX_QUEUE_DEPTH`).
pub const MAX_DEPTH: u16 = 4096;
/// The default number of worker threads per queue (`--workers`).
pub const DEFAULT_WORKERS: u16 = 4;
/// The most worker threads per queue.
pub const MAX_WORKERS: u16 = 64;
/// The default queue depth.
pub const DEFAULT_DEPTH: u16 = 128;
/// The largest device id the ublk driver hands out (ids are `int`s; keep to a sane range).
pub const MAX_DEV_ID: u32 = 1 << 20;

/// Serves a pcache (cache device + backing device) as a ublk block device `/dev/ublkbN`.
///
/// Log verbosity follows `RUST_LOG` (e.g. `RUST_LOG=pcache_ublk=debug`).
#[derive(Debug, Parser)]
#[command(name = "pcache-ublk", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start serving a cache + backing device pair as a new /dev/ublkbN.
    ///
    /// Prints `ID PATH` (e.g. `0 /dev/ublkb0`) once the device is live and returns, leaving
    /// a daemon behind (with --foreground: stays until the device is deleted), or fails
    /// with the reason; nothing is created when the arguments are bad.
    Add(AddArgs),
    /// Stop a device gracefully and delete it (dirty data stays in the cache); a device
    /// whose daemon died is deleted directly.
    Del(DelArgs),
    /// List the pcache-ublk devices with their cache, backing device and state.
    List(ListArgs),
    /// Show the engine's status and counters of a running device.
    Status(StatusArgs),
    /// Change a tunable of a running device: `gc_percent` and `cache_mode` are persisted
    /// in the cache, `seq_cutoff_read`, `seq_cutoff_write` and `writeback_percent` last
    /// while the device exists (`recover` after a daemon crash sets them again).
    Set(SetArgs),
    /// Write back everything that is dirty now, while I/O goes on (with --wait: show the
    /// progress and return when it is done).
    Flush(FlushArgs),
    /// Re-attach to a device whose daemon died (ublk user recovery), after replaying the
    /// cache.
    Recover(RecoverArgs),
}

/// The cache and backing devices, shared by `add` and `recover`.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// The cache device: /dev/daxN.M, /dev/pmemN, or a file (formatted by pcache-mkfs).
    #[arg(long, value_name = "DEV")]
    pub cache: PathBuf,
    /// On a shared cache device (pcache-shared): the cache to serve (its name, or id).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The backing block device (or a file).
    #[arg(long, value_name = "DEV")]
    pub backing: PathBuf,
}

/// Options of the daemon process, shared by `add` and `recover`.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Stay in the foreground (for systemd): logs go to stderr, and the command returns
    /// when the device is deleted.
    #[arg(long)]
    pub foreground: bool,
    /// Where a background daemon's log goes (default: /run/pcache-ublk/daemon.log, or
    /// daemon.log in $PCACHE_UBLK_RUN_DIR).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Worker threads per queue for requests that may wait for the backing device (read
    /// misses, discards), so they do not hold up the queue's other requests; 0..=64, and 0
    /// serves every request on its queue thread.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_WORKERS,
          value_parser = clap::value_parser!(u16).range(0..=i64::from(MAX_WORKERS)))]
    pub workers: u16,
    /// Debug: do not ask for user copy even where the driver has it, so the copy-mode
    /// fallback (older kernels) can be exercised on a new one.
    #[arg(long, hide = true)]
    pub no_user_copy: bool,
    /// On a pmem block device cache (`/dev/pmemN`), write requests of 32 KiB or more from
    /// their own pages to the cache device (ublk's `UBLK_F_AUTO_BUF_REG`, Linux 6.16+):
    /// no copy through the daemon. Off by default: it pays off for large writes only
    /// (docs/operations.md).
    #[arg(long)]
    pub zero_copy: bool,
    /// Internal: this process is the detached daemon started by `add`/`recover`; it
    /// reports its outcome as one JSON line on stdout, then detaches stdout.
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}

/// `add`.
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// The cache device: /dev/daxN.M, /dev/pmemN, or a file (formatted by pcache-mkfs).
    #[arg(long, value_name = "DEV", required_unless_present = "ram_target")]
    pub cache: Option<PathBuf>,
    /// On a shared cache device (pcache-shared): the cache to serve (its name, or its
    /// id). Its backing device must be the one it was created for (size and identity).
    #[arg(
        long,
        value_name = "NAME",
        requires = "cache",
        conflicts_with = "ram_target"
    )]
    pub name: Option<String>,
    /// The backing block device (or a file); /dev/ublkbN has its size.
    #[arg(long, value_name = "DEV", required_unless_present = "ram_target")]
    pub backing: Option<PathBuf>,
    /// Number of ublk queues, 1..=4096 (default: the number of CPUs).
    #[arg(long, short = 'q', value_name = "N")]
    pub queues: Option<u16>,
    /// Queue depth: requests in flight per queue, 1..=4096.
    #[arg(long, short = 'd', value_name = "N", default_value_t = DEFAULT_DEPTH)]
    pub depth: u16,
    /// Expect the cache to keep data CRCs (`--data-crc`, `--data-crc=on`) or not
    /// (`=off`). Not needed: the setting is read from the cache, which refuses a value
    /// that contradicts it before anything is written.
    #[arg(
        long,
        value_name = "on|off",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "on",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub data_crc: Option<bool>,
    /// The device id to ask for (N in /dev/ublkbN; default: the driver picks).
    #[arg(long, short = 'n', value_name = "N")]
    pub id: Option<u32>,
    /// If device --id still exists because its daemon died (ublk user recovery: it is
    /// QUIESCED, its I/O held), recover it instead of failing, as `pcache-ublk recover`
    /// does. For a service manager that restarts the daemon (systemd's
    /// `Restart=on-failure`). Only a pcache-ublk device that served this same --cache and
    /// --backing is recovered; any other existing device is refused as without the flag.
    #[arg(long, requires = "id", conflicts_with = "ram_target")]
    pub recover_if_exists: bool,
    /// Switch the cache to this mode (persisted in the cache): writeback, writethrough,
    /// writearound, writeonly or passthrough. Default: the mode the cache holds.
    #[arg(long, value_name = "MODE", conflicts_with = "ram_target")]
    pub cache_mode: Option<CacheMode>,
    /// Sequential cutoff for reads: a sequential stream past this size is not cached
    /// (bytes, or with a K/M/G suffix; 0 = off, the default).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "0")]
    pub seq_cutoff_read: u64,
    /// Sequential cutoff for writes: a sequential stream past this size goes to the
    /// backing device as in writearound (0 = off, the default).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "0")]
    pub seq_cutoff_write: u64,
    /// Let dirty data build up to this share of the cache while writes keep coming, so
    /// that a block rewritten meanwhile is written back once (bcache's writeback_percent).
    /// Writeback still runs when the cache needs space, when GC is due, and once writes
    /// stop for half a second. 0 (the default) writes back at once, as the kernel does.
    #[arg(long, value_name = "PERCENT", value_parser = crate::rpc::parse_writeback_percent, default_value = "0", conflicts_with = "ram_target")]
    pub writeback_percent: u8,
    /// Debug: serve a RAM disk of this many bytes instead of a cache (nothing survives).
    #[arg(long, hide = true, value_name = "BYTES", conflicts_with_all = ["cache", "backing", "data_crc"])]
    pub ram_target: Option<u64>,
    /// Daemon options.
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// `del`.
#[derive(Debug, Clone, Args)]
pub struct DelArgs {
    /// The device id (N in /dev/ublkbN).
    #[arg(long, short = 'n', value_name = "ID")]
    pub id: u32,
    /// Stop the device even while it is mounted or held open exclusively (whatever uses
    /// it then gets I/O errors).
    #[arg(long)]
    pub force: bool,
    /// Write back all dirty data first (showing progress), so the cache is clean when
    /// the device is gone; interrupting it leaves the device serving.
    #[arg(long)]
    pub flush: bool,
}

/// `flush`.
#[derive(Debug, Clone, Args)]
pub struct FlushArgs {
    /// The device id.
    #[arg(long, short = 'n', value_name = "ID")]
    pub id: u32,
    /// Show the progress (dirty bytes left, rate) and return when it is done.
    #[arg(long)]
    pub wait: bool,
}

/// `list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The device id.
    #[arg(long, short = 'n', value_name = "ID")]
    pub id: u32,
    /// Print the status as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `set`.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// The device id.
    #[arg(long, short = 'n', value_name = "ID")]
    pub id: u32,
    /// The tunable: `gc_percent` (GC starts when this share of segments is in use),
    /// `cache_mode`, `seq_cutoff_read`, `seq_cutoff_write` or `writeback_percent`.
    #[arg(value_name = "KEY")]
    pub key: String,
    /// Its new value (gc_percent: 0..=90; cache_mode: a mode's name; the cutoffs: a size,
    /// 0 = off; writeback_percent: 0..=80).
    #[arg(value_name = "VALUE")]
    pub value: String,
}

/// `recover`.
#[derive(Debug, Clone, Args)]
pub struct RecoverArgs {
    /// The id of the device to re-attach to.
    #[arg(long, short = 'n', value_name = "ID")]
    pub id: u32,
    /// The cache and backing devices it served (refused if its record names others).
    #[command(flatten)]
    pub devices: DeviceArgs,
    /// Daemon options.
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// The number of CPUs, the default queue count.
pub fn default_queues() -> u16 {
    std::thread::available_parallelism()
        .map(|n| u16::try_from(n.get()).unwrap_or(MAX_QUEUES))
        .unwrap_or(1)
        .clamp(1, MAX_QUEUES)
}

fn check_range(what: &str, v: u16, max: u16) -> Result<(), Error> {
    if v == 0 || v > max {
        return Err(Error::Invalid(format!("{what} must be 1..={max}, not {v}")));
    }
    Ok(())
}

/// What `add` serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A cache in front of a backing device.
    Cache {
        /// The cache device.
        cache: PathBuf,
        /// The cache of a shared cache device, by name or id.
        name: Option<String>,
        /// That cache's range on the device, `(start, len)`: set by
        /// [`crate::daemon::claim`] from the table.
        range: Option<(u64, u64)>,
        /// The backing device.
        backing: PathBuf,
        /// Data CRCs: as given on the command line until [`crate::daemon::claim`] reads
        /// the cache's own setting.
        data_crc: Option<bool>,
    },
    /// The RAM debug target.
    Ram {
        /// Its size in bytes.
        size: u64,
    },
}

/// A size in bytes, with an optional K, M, G or T suffix (powers of 1024).
///
/// # Errors
/// A message naming the bad value (clap's convention for value parsers).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: the suffix must be K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or with a K/M/G/T suffix)"))
}

impl AddArgs {
    /// The cache mode and cutoffs asked for.
    pub fn tuning(&self) -> Tuning {
        Tuning {
            cache_mode: self.cache_mode,
            seq_cutoff: SeqCutoff {
                read: self.seq_cutoff_read,
                write: self.seq_cutoff_write,
            },
            writeback_percent: self.writeback_percent,
        }
    }

    /// The queue count in effect.
    pub fn queues(&self) -> u16 {
        self.queues.unwrap_or_else(default_queues)
    }

    /// Checks what clap cannot, and returns what to serve.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the bad argument.
    pub fn validate(&self) -> Result<Backend, Error> {
        check_range("--queues", self.queues(), MAX_QUEUES)?;
        check_range("--depth", self.depth, MAX_DEPTH)?;
        if let Some(id) = self.id {
            if id > MAX_DEV_ID {
                return Err(Error::Invalid(format!(
                    "--id must be 0..={MAX_DEV_ID}, not {id}"
                )));
            }
        }
        match (&self.cache, &self.backing, self.ram_target) {
            (_, _, Some(size)) => {
                if size == 0 || size % 4096 != 0 {
                    return Err(Error::Invalid(format!(
                        "--ram-target must be a non-zero multiple of 4096, not {size}"
                    )));
                }
                Ok(Backend::Ram { size })
            }
            (Some(cache), Some(backing), None) => Ok(Backend::Cache {
                cache: cache.clone(),
                name: self.name.clone(),
                range: None,
                backing: backing.clone(),
                data_crc: self.data_crc,
            }),
            _ => Err(Error::Invalid(
                "--cache and --backing are both required".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pcache-ublk").chain(args.iter().copied()))
    }

    fn add(args: &[&str]) -> AddArgs {
        match parse(args).unwrap().command {
            Command::Add(a) => a,
            other => panic!("not add: {other:?}"),
        }
    }

    #[test]
    fn modes_cutoffs_and_flush_parse() {
        let a = add(&[
            "add",
            "--cache",
            "c",
            "--backing",
            "b",
            "--cache-mode",
            "writearound",
            "--seq-cutoff-read",
            "4M",
            "--seq-cutoff-write",
            "65536",
        ]);
        assert_eq!(a.tuning().cache_mode, Some(CacheMode::Writearound));
        assert_eq!(
            a.tuning().seq_cutoff,
            SeqCutoff {
                read: 4 << 20,
                write: 65536
            }
        );
        assert_eq!(
            add(&["add", "--cache", "c", "--backing", "b"]).tuning(),
            Tuning::default()
        );
        // `add --cache c --backing b` and more.
        let add_cb =
            |more: &[&'static str]| [&["add", "--cache", "c", "--backing", "b"], more].concat();
        let a = add(&add_cb(&["--writeback-percent", "25"]));
        assert_eq!(a.tuning().writeback_percent, 25);
        assert!(parse(&add_cb(&["--writeback-percent", "81"])).is_err());
        assert!(parse(&[
            "add",
            "--cache",
            "c",
            "--backing",
            "b",
            "--cache-mode",
            "fast"
        ])
        .is_err());
        assert!(parse(&[
            "add",
            "--cache",
            "c",
            "--backing",
            "b",
            "--seq-cutoff-read",
            "4X"
        ])
        .is_err());
        match parse(&["flush", "-n", "2", "--wait"]).unwrap().command {
            Command::Flush(f) => assert!(f.id == 2 && f.wait),
            other => panic!("{other:?}"),
        }
        match parse(&["del", "-n", "2", "--flush"]).unwrap().command {
            Command::Del(d) => assert!(d.flush && !d.force),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn add_takes_the_documented_options() {
        let a = add(&[
            "add",
            "--cache",
            "/dev/pmem0",
            "--backing",
            "/dev/sdb",
            "--queues",
            "4",
            "--depth",
            "64",
            "--data-crc",
            "--foreground",
            "--id",
            "3",
        ]);
        assert_eq!(a.queues(), 4);
        assert_eq!(a.depth, 64);
        assert_eq!(a.id, Some(3));
        assert!(!a.recover_if_exists);
        assert!(a.daemon.foreground && !a.daemon.daemon_child);
        assert_eq!(
            a.validate().unwrap(),
            Backend::Cache {
                cache: "/dev/pmem0".into(),
                name: None,
                range: None,
                backing: "/dev/sdb".into(),
                data_crc: Some(true)
            }
        );
    }

    #[test]
    fn add_defaults_to_one_queue_per_cpu_and_depth_128() {
        let a = add(&["add", "--cache", "c", "--backing", "b"]);
        assert_eq!(a.queues(), default_queues());
        assert!(a.queues() >= 1);
        assert_eq!(a.depth, DEFAULT_DEPTH);
        assert_eq!(a.id, None);
        assert!(a.data_crc.is_none() && !a.daemon.foreground);
        let off = add(&["add", "--cache", "c", "--backing", "b", "--data-crc=off"]);
        assert_eq!(off.data_crc, Some(false));
        assert!(parse(&["add", "--cache", "c", "--backing", "b", "--data-crc=maybe"]).is_err());
    }

    #[test]
    fn add_requires_both_devices() {
        assert!(parse(&["add", "--cache", "c"]).is_err());
        assert!(parse(&["add", "--backing", "b"]).is_err());
        assert!(parse(&["add"]).is_err());
    }

    #[test]
    fn add_rejects_zero_and_oversized_queue_settings() {
        for args in [
            &["add", "--cache", "c", "--backing", "b", "--queues", "0"][..],
            &["add", "--cache", "c", "--backing", "b", "--depth", "0"],
            &["add", "--cache", "c", "--backing", "b", "--depth", "4097"],
            &["add", "--cache", "c", "--backing", "b", "--queues", "5000"],
        ] {
            let err = add(args).validate().unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{args:?}: {err}");
        }
        // Not a number at all is clap's to refuse.
        assert!(parse(&["add", "--cache", "c", "--backing", "b", "--depth", "x"]).is_err());
        assert!(parse(&["add", "--cache", "c", "--backing", "b", "--queues", "-1"]).is_err());
    }

    #[test]
    fn recover_if_exists_needs_an_id_and_devices() {
        let a = add(&[
            "add",
            "--foreground",
            "--id",
            "0",
            "--recover-if-exists",
            "--cache",
            "c",
            "--backing",
            "b",
        ]);
        assert!(a.recover_if_exists && a.daemon.foreground);
        assert_eq!(a.id, Some(0));
        // Without --id there is no device to look at.
        let err = parse(&[
            "add",
            "--recover-if-exists",
            "--cache",
            "c",
            "--backing",
            "b",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        // A RAM device cannot be recovered.
        assert!(parse(&[
            "add",
            "--id",
            "0",
            "--recover-if-exists",
            "--ram-target",
            "4096"
        ])
        .is_err());
    }

    #[test]
    fn the_ram_target_replaces_the_devices() {
        let a = add(&["add", "--ram-target", "1048576"]);
        assert_eq!(a.validate().unwrap(), Backend::Ram { size: 1 << 20 });
        assert!(parse(&["add", "--ram-target", "4096", "--cache", "c"]).is_err());
        assert!(add(&["add", "--ram-target", "1000"]).validate().is_err());
    }

    #[test]
    fn the_other_subcommands_parse() {
        assert!(matches!(
            parse(&["del", "-n", "2"]).unwrap().command,
            Command::Del(DelArgs {
                id: 2,
                force: false,
                flush: false
            })
        ));
        assert!(parse(&["del"]).is_err());
        assert!(matches!(
            parse(&["list"]).unwrap().command,
            Command::List(ListArgs { json: false })
        ));
        assert!(matches!(
            parse(&["status", "-n", "1", "--json"]).unwrap().command,
            Command::Status(StatusArgs { id: 1, json: true })
        ));
        match parse(&["set", "-n", "0", "gc_percent", "50"])
            .unwrap()
            .command
        {
            Command::Set(s) => assert_eq!((s.id, &*s.key, &*s.value), (0, "gc_percent", "50")),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["set", "-n", "0", "gc_percent"]).is_err());
        match parse(&[
            "recover",
            "-n",
            "5",
            "--cache",
            "/dev/dax0.0",
            "--backing",
            "/dev/vdb",
        ])
        .unwrap()
        .command
        {
            Command::Recover(r) => {
                assert_eq!(r.id, 5);
                assert_eq!(r.devices.cache, PathBuf::from("/dev/dax0.0"));
                assert!(!r.daemon.foreground);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["recover", "-n", "5", "--cache", "c"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
    }
}
