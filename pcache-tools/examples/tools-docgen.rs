//! `cargo run --example tools-docgen -p pcache-tools -- SHARE_DIR`: writes the man pages and the
//! bash, zsh and fish completions of the five tools, generated from their clap definitions
//! (`pcache_tools::args`), under SHARE_DIR (`man/man8`, `bash-completion/completions`,
//! `zsh/site-functions`, `fish/vendor_completions.d`). `cargo xtask install` runs it; it
//! is an example so that neither clap_mangen nor clap_complete ships in the tools. The
//! helpers below are the same as in `pcache-ublk/examples/ublk-docgen.rs`.

use clap::CommandFactory;
use clap_complete::Shell;
use pcache_tools::args::{DumpArgs, FsckArgs, MkfsArgs, ReplayArgs, SharedArgs};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Every page's SEE ALSO: the other commands of pcache.
const SEE_ALSO: &[&str] = &[
    "pcache-mkfs",
    "pcache-fsck",
    "pcache-dump",
    "pcache-replay",
    "pcache-shared",
    "pcache-ublk",
];

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [share] = args.as_slice() else {
        eprintln!("usage: tools-docgen SHARE_DIR");
        std::process::exit(2);
    };
    let share = PathBuf::from(share);
    for cmd in [
        MkfsArgs::command(),
        FsckArgs::command(),
        DumpArgs::command(),
        ReplayArgs::command(),
        SharedArgs::command(),
    ] {
        man_pages(cmd.clone(), &share.join("man/man8"))?;
        completions(cmd, &share)?;
    }
    Ok(())
}

/// `NAME.8`, then one page per visible subcommand (`NAME-SUB.8`, recursively).
fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write_page(cmd, dir)
}

fn write_page(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub.clone(), dir)?;
    }
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let man = clap_mangen::Man::new(cmd)
        .source(format!("pcache {}", env!("CARGO_PKG_VERSION")))
        .section("8")
        .manual("pcache");
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(man.get_filename()))?);
    man.render(&mut out)?;
    let others: Vec<String> = SEE_ALSO
        .iter()
        .filter(|&&n| n != name)
        .map(|n| format!("\\fB{}\\fR(8)", n.replace('-', "\\-")))
        .collect();
    writeln!(out, ".SH \"SEE ALSO\"\n{}", others.join(", "))?;
    out.flush()
}

/// The completions of one binary for bash, zsh and fish.
fn completions(mut cmd: clap::Command, share: &Path) -> std::io::Result<()> {
    let bin = cmd.get_name().to_owned();
    for (shell, dir, file) in [
        (Shell::Bash, "bash-completion/completions", bin.clone()),
        (Shell::Zsh, "zsh/site-functions", format!("_{bin}")),
        (
            Shell::Fish,
            "fish/vendor_completions.d",
            format!("{bin}.fish"),
        ),
    ] {
        let dir = share.join(dir);
        std::fs::create_dir_all(&dir)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(file))?);
        clap_complete::generate(shell, &mut cmd, &bin, &mut out);
        out.flush()?;
    }
    Ok(())
}
