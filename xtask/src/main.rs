//! Project tasks: `cargo xtask <task> [args]`.
//!
//! `main.rs` is only the task table and the dispatcher; each task lives in its own
//! module (`qemu/` for `qemu-test`). To add a task, add a module and a row to [`TASKS`].

mod crash;
mod fuzz;
mod install;
mod qemu;

use std::process::ExitCode;

/// A task: its name on the command line, a one-line help, and its entry point.
/// The entry point gets the arguments after the task name.
struct Task {
    name: &'static str,
    help: &'static str,
    run: fn(&[String]) -> anyhow::Result<ExitCode>,
}

const TASKS: &[Task] = &[
    Task {
        name: "qemu-test",
        help: "boot test VMs (TCG, emulated pmem, dm-pcache, ublk) and run xtask/guest/cases; see docs/qemu.md",
        run: qemu::main,
    },
    Task {
        name: "bench",
        help: "`bench engine`: the in-process engine benchmark; `bench --vm`: fio side by side in one VM",
        run: qemu::bench_main,
    },
    Task {
        name: "crash",
        help: "`crash [--points N] [--mutants]`: the simulated power-cut proof over N crash points (release); --mutants: once per dropped persistence step, each must be caught",
        run: crash::main,
    },
    Task {
        name: "fuzz",
        help: "`fuzz [--secs N] [TARGET]`: coverage-guided fuzzing (cargo-fuzz) of the targets in fuzz/",
        run: fuzz::main,
    },
    Task {
        name: "install",
        help: "release binaries, man pages, completions, the systemd unit, docs (--prefix, --destdir, --check)",
        run: install::main,
    },
    Task {
        name: "deb",
        help: "target/debian/pcache_<version>_<arch>.deb: what `install --prefix /usr` installs",
        run: install::deb_main,
    },
];

fn usage() {
    eprintln!(
        "usage: cargo xtask <task> [args]   (`cargo xtask <task> --help` for a task's options)\n"
    );
    eprintln!("tasks:");
    for t in TASKS {
        eprintln!("  {:<12} {}", t.name, t.help);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        usage();
        return ExitCode::SUCCESS;
    };
    if matches!(name.as_str(), "-h" | "--help" | "help") {
        usage();
        return ExitCode::SUCCESS;
    }
    let Some(task) = TASKS.iter().find(|t| t.name == name) else {
        eprintln!("xtask: unknown task `{name}`\n");
        usage();
        return ExitCode::from(2);
    };
    match (task.run)(&args[1..]) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask {}: error: {e:#}", task.name);
            ExitCode::FAILURE
        }
    }
}
