//! `add --id N --recover-if-exists`: what a restarted service does when its device is
//! still there.
//!
//! A daemon that dies leaves `/dev/ublkbN` quiesced, its I/O held in the kernel (ublk
//! user recovery). A plain `add --id N` then fails ("already exists"); a service manager
//! that restarts the daemon (systemd's `Restart=on-failure`) needs the restart to
//! re-attach instead, as `pcache-ublk recover` does. With the flag, `add` looks at device
//! N first ([`probe`]) and [`decide`]s:
//!
//! - no device N: add it, as without the flag;
//! - device N is a pcache-ublk device with user recovery, its daemon is gone, it is
//!   `QUIESCED` (or still `LIVE`: the kernel quiesces it a moment after the daemon
//!   died), and what it served (libublk's JSON or our run record) names the same cache
//!   and backing devices: recover it;
//! - anything else is refused, naming why: another program's device, one without a
//!   record of what it served, one that served other devices, one whose daemon still
//!   runs, one in another state.
//!
//! The decision only picks the mode: `daemon::serve` checks everything again before it
//! touches anything (a device can change between the two).

use std::path::Path;

use libublk::ctrl::UblkCtrl;
use libublk::sys;

use crate::cli::Backend;
use crate::daemon::{check_same_devices, state_name, Mode};
use crate::error::{describe_ublk, Error};
use crate::state::{self, TargetData};

/// What is known of an existing ublk device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// The kernel's state (`UBLK_S_DEV_*`).
    pub state: u32,
    /// Whether it was created with `UBLK_F_USER_RECOVERY`.
    pub user_recovery: bool,
    /// What it served, from libublk's JSON or our run record; `None` for a device that
    /// is not a pcache-ublk device (or left no record).
    pub served: Option<TargetData>,
    /// The pid of the daemon that serves it, while that daemon is still running.
    pub daemon: Option<u32>,
}

/// Looks at ublk device `id`: `None` if it does not exist.
///
/// # Errors
/// [`Error::NotOurs`] if it exists but cannot be opened.
pub fn probe(id: u32) -> Result<Option<Existing>, Error> {
    if !Path::new(&format!("/dev/ublkc{id}")).exists() {
        return Ok(None);
    }
    let sid = i32::try_from(id).map_err(|_| Error::Invalid(format!("bad device id {id}")))?;
    let ctrl = UblkCtrl::new_simple(sid).map_err(|e| Error::NotOurs {
        id,
        why: format!("it exists but cannot be opened: {}", describe_ublk(&e)),
    })?;
    let info = ctrl.dev_info();
    let record = state::read_record(&state::run_dir(), id).ok().flatten();
    let daemon = record
        .as_ref()
        .map(|r| r.pid)
        .filter(|&pid| crate::client::pid_alive(pid));
    let served = ctrl
        .get_target_data_from_json()
        .and_then(|v| TargetData::from_target_json(&v))
        .or_else(|| record.map(|r| r.target));
    Ok(Some(Existing {
        state: u32::from(info.state),
        user_recovery: info.flags & u64::from(sys::UBLK_F_USER_RECOVERY) != 0,
        served,
        daemon,
    }))
}

/// Add device `id`, or recover it, given what [`probe`] found and what is to be served.
///
/// # Errors
/// [`Error::NotOurs`] or [`Error::Invalid`] when device `id` exists and is not one this
/// `add` may recover.
pub fn decide(id: u32, existing: Option<&Existing>, backend: &Backend) -> Result<Mode, Error> {
    let Some(dev) = existing else {
        return Ok(Mode::Add { id: Some(id) });
    };
    let refuse = |why: String| Error::NotOurs {
        id,
        why: format!("{why}; not recovering it (see pcache-ublk list)"),
    };
    let Some(served) = dev.served.as_ref() else {
        return Err(refuse(
            "it exists and is not a pcache-ublk device, or left no record of what it served".into(),
        ));
    };
    if served.ram_target.is_some() {
        return Err(refuse(
            "it exists and served the RAM debug target, which cannot be recovered".into(),
        ));
    }
    if let Some(pid) = dev.daemon {
        return Err(refuse(format!(
            "it exists and its daemon (pid {pid}) is running"
        )));
    }
    if !dev.user_recovery {
        return Err(refuse(
            "it exists and was created without user recovery".into(),
        ));
    }
    match dev.state {
        sys::UBLK_S_DEV_QUIESCED | sys::UBLK_S_DEV_LIVE => {}
        other => {
            return Err(refuse(format!(
                "it exists and is {}, not QUIESCED (delete it with `pcache-ublk del -n {id}`, \
                 then add it again)",
                state_name(other)
            )))
        }
    }
    check_same_devices(Some(served), backend)
        .map_err(|e| refuse(format!("it exists and its daemon died, but {e}")))?;
    Ok(Mode::Recover { id })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::state::CopyMode;

    fn served(cache: &str, backing: &str) -> TargetData {
        TargetData {
            cache: Some(cache.into()),
            cache_name: None,
            backing: Some(backing.into()),
            data_crc: false,
            queues: 2,
            depth: 128,
            copy_mode: CopyMode::UserCopy,
            workers: 4,
            size: 1 << 30,
            ram_target: None,
            seq_cutoff_read: 0,
            seq_cutoff_write: 0,
            writeback_percent: 0,
        }
    }

    fn quiesced(cache: &str, backing: &str) -> Existing {
        Existing {
            state: sys::UBLK_S_DEV_QUIESCED,
            user_recovery: true,
            served: Some(served(cache, backing)),
            daemon: None,
        }
    }

    fn backend(cache: &str, backing: &str) -> Backend {
        Backend::Cache {
            cache: PathBuf::from(cache),
            name: None,
            range: None,
            backing: PathBuf::from(backing),
            data_crc: None,
        }
    }

    fn refused(id: u32, dev: &Existing, be: &Backend) -> String {
        match decide(id, Some(dev), be) {
            Err(e @ Error::NotOurs { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn no_device_means_a_plain_add_with_that_id() {
        let be = backend("/dev/pmem0", "/dev/vdb");
        assert_eq!(decide(4, None, &be).unwrap(), Mode::Add { id: Some(4) });
    }

    #[test]
    fn a_quiesced_device_of_ours_on_the_same_devices_is_recovered() {
        let be = backend("/dev/pmem0", "/dev/vdb");
        let dev = quiesced("/dev/pmem0", "/dev/vdb");
        assert_eq!(decide(4, Some(&dev), &be).unwrap(), Mode::Recover { id: 4 });
        // Right after the daemon died the kernel may still say LIVE: recover waits for it.
        let live = Existing {
            state: sys::UBLK_S_DEV_LIVE,
            ..dev
        };
        assert_eq!(
            decide(4, Some(&live), &be).unwrap(),
            Mode::Recover { id: 4 }
        );
    }

    #[test]
    fn the_same_devices_through_other_paths_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.img");
        let backing = dir.path().join("backing.img");
        std::fs::write(&cache, b"c").unwrap();
        std::fs::write(&backing, b"b").unwrap();
        let link = dir.path().join("cache-link");
        std::os::unix::fs::symlink(&cache, &link).unwrap();
        let dev = quiesced(cache.to_str().unwrap(), backing.to_str().unwrap());
        let be = backend(link.to_str().unwrap(), backing.to_str().unwrap());
        assert_eq!(decide(0, Some(&dev), &be).unwrap(), Mode::Recover { id: 0 });
    }

    #[test]
    fn other_devices_than_those_served_are_refused() {
        let dev = quiesced("/dev/pmem0", "/dev/vdb");
        let msg = refused(1, &dev, &backend("/dev/pmem1", "/dev/vdb"));
        assert!(
            msg.contains("/dev/pmem0") && msg.contains("/dev/pmem1"),
            "{msg}"
        );
        let msg = refused(1, &dev, &backend("/dev/pmem0", "/dev/vdc"));
        assert!(msg.contains("backing") && msg.contains("/dev/vdc"), "{msg}");
        // Swapped roles are other devices too.
        refused(1, &dev, &backend("/dev/vdb", "/dev/pmem0"));
    }

    #[test]
    fn a_device_without_a_record_is_not_recovered_on_trust() {
        // `recover` trusts the command line when nothing is recorded; an automatic
        // restart must not.
        let dev = Existing {
            served: None,
            ..quiesced("/dev/pmem0", "/dev/vdb")
        };
        let msg = refused(2, &dev, &backend("/dev/pmem0", "/dev/vdb"));
        assert!(msg.contains("not a pcache-ublk device"), "{msg}");
        assert!(msg.contains("ublk device 2"), "{msg}");
    }

    #[test]
    fn a_device_whose_daemon_runs_is_refused() {
        let dev = Existing {
            state: sys::UBLK_S_DEV_LIVE,
            daemon: Some(1234),
            ..quiesced("/dev/pmem0", "/dev/vdb")
        };
        let msg = refused(0, &dev, &backend("/dev/pmem0", "/dev/vdb"));
        assert!(msg.contains("pid 1234") && msg.contains("running"), "{msg}");
    }

    #[test]
    fn dead_or_failing_devices_and_devices_without_recovery_are_refused() {
        let be = backend("/dev/pmem0", "/dev/vdb");
        for state in [sys::UBLK_S_DEV_DEAD, sys::UBLK_S_DEV_FAIL_IO, 77] {
            let dev = Existing {
                state,
                ..quiesced("/dev/pmem0", "/dev/vdb")
            };
            let msg = refused(3, &dev, &be);
            assert!(msg.contains(state_name(state)), "{msg}");
            assert!(msg.contains("pcache-ublk del -n 3"), "{msg}");
        }
        let dev = Existing {
            user_recovery: false,
            ..quiesced("/dev/pmem0", "/dev/vdb")
        };
        assert!(refused(3, &dev, &be).contains("without user recovery"));
    }

    #[test]
    fn a_ram_device_is_never_recovered() {
        let mut dev = quiesced("/dev/pmem0", "/dev/vdb");
        if let Some(s) = dev.served.as_mut() {
            s.cache = None;
            s.backing = None;
            s.ram_target = Some(1 << 20);
        }
        let msg = refused(0, &dev, &backend("/dev/pmem0", "/dev/vdb"));
        assert!(msg.contains("RAM"), "{msg}");
    }

    #[test]
    fn probing_a_device_that_does_not_exist_finds_nothing() {
        // No /dev/ublkc<largest id> on any machine.
        assert_eq!(probe(crate::cli::MAX_DEV_ID).unwrap(), None);
    }
}
