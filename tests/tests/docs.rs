//! Every command line in README.md and docs/*.md is checked, so a document cannot drift
//! from the tools.
//!
//! [`extract`] finds the command lines (shell blocks, synopses, code spans). Each one is
//! then checked against what it names:
//! - `pcache-mkfs`/`-fsck`/`-dump`/`-replay`/`-ublk`: parsed by the binaries' own clap
//!   definitions (`pcache_tools::args`, `pcache_ublk::cli::Cli`, and `AddArgs::validate`
//!   for `add`), with placeholders (`DEVICE`, `$PMEM`, `<pid>`) read as `1`. A shell line
//!   must be complete; a code span or a line with `...`/`ARGS` may leave out required
//!   arguments; a synopsis must name every visible option, and each `[alternative]` must
//!   parse alongside the required part.
//! - `cargo xtask TASK`: the task must be in `xtask/src/main.rs`'s `TASKS` table, and each
//!   flag must be a match arm of the file that defines the task's entry point.
//! - `cargo fuzz SUB [TARGET] [INPUT]` and `cargo run --manifest-path fuzz/Cargo.toml
//!   --example NAME`: the target must be a `[[bin]]` of `fuzz/Cargo.toml`, the example a
//!   file of `fuzz/examples/` (see [`check_fuzz`]).
//! - `./script`, `.ci/run`: the file must exist and be executable.
//! - anything else must be in [`EXTERNAL`], which says why it is not checked.
//!
//! Then the shell blocks that use mkfs, fsck, dump or replay on devices are **run**, with
//! the built binaries, on sparse image files standing in for the devices (see
//! [`run_block`]); the commands in [`NOT_RUN`] are parsed only.

#[path = "docs/extract.rs"]
mod extract;

use clap::{CommandFactory, Parser};
use extract::{CmdLine, Origin};
use pcache_tools::args::{DumpArgs, FsckArgs, MkfsArgs, ReplayArgs, SharedArgs};
use std::path::{Path, PathBuf};

/// Programs that are not ours: documented commands that are not checked, and why.
const EXTERNAL: &[(&str, &str)] = &[
    (
        "cat",
        "coreutils; writes a config file in the systemd example",
    ),
    ("mkdir", "coreutils"),
    (
        "systemctl",
        "systemd: needs a booted system with the unit installed",
    ),
    ("journalctl", "systemd: reads the journal"),
    ("kill", "signals a running daemon"),
    ("modprobe", "loads a kernel module (root)"),
    ("ndctl", "configures NVDIMM namespaces (root, hardware)"),
    ("dmsetup", "device-mapper (root, the kernel's dm-pcache)"),
    (
        "apt",
        "installs the .deb of `cargo xtask deb` (root; .ci/run inspects the package)",
    ),
    (
        "man",
        "reads an installed man page (`cargo xtask install --check` renders them all)",
    ),
];

/// Our commands that are parsed but never run here, and why.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "pcache-ublk",
        "needs root, the ublk driver and /dev/ublk-control (the VM suite runs it)",
    ),
    (
        "cargo",
        "xtask tasks build release binaries, install, package, fuzz or boot VMs; cargo fuzz \
         and the fuzz crate's examples run fuzz targets",
    ),
];

/// Tool command lines that cannot be checked at all (file, text of the line, why). An
/// entry that matches no line fails the test, so the list cannot go stale.
const UNCHECKED: &[(&str, &str, &str)] = &[];

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The documents checked: README.md and docs/*.md.
fn documents() -> Vec<PathBuf> {
    let root = repo();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, root.join("README.md"));
    docs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Mkfs,
    Fsck,
    Dump,
    Replay,
    Shared,
    Ublk,
}

impl Tool {
    const ALL: [Self; 6] = [
        Self::Mkfs,
        Self::Fsck,
        Self::Dump,
        Self::Replay,
        Self::Shared,
        Self::Ublk,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Mkfs => "pcache-mkfs",
            Self::Fsck => "pcache-fsck",
            Self::Dump => "pcache-dump",
            Self::Replay => "pcache-replay",
            Self::Shared => "pcache-shared",
            Self::Ublk => "pcache-ublk",
        }
    }

    /// The tool a program word names (`pcache-fsck`, `./target/debug/pcache-fsck`).
    fn of(program: &str) -> Option<Self> {
        let base = program.rsplit('/').next().unwrap_or(program);
        Self::ALL.into_iter().find(|t| t.name() == base)
    }

    fn command(self) -> clap::Command {
        match self {
            Self::Mkfs => MkfsArgs::command(),
            Self::Fsck => FsckArgs::command(),
            Self::Dump => DumpArgs::command(),
            Self::Replay => ReplayArgs::command(),
            Self::Shared => SharedArgs::command(),
            Self::Ublk => pcache_ublk::cli::Cli::command(),
        }
    }

    /// Parses `argv` (program first) as the binary would. The error's kind is `None` for
    /// what `AddArgs::validate` refuses after clap accepted it.
    fn parse(self, argv: &[String]) -> Result<(), (Option<clap::error::ErrorKind>, String)> {
        let clap_err = |e: clap::Error| (Some(e.kind()), e.to_string());
        match self {
            Self::Mkfs => MkfsArgs::try_parse_from(argv).map(drop).map_err(clap_err),
            Self::Fsck => FsckArgs::try_parse_from(argv).map(drop).map_err(clap_err),
            Self::Dump => DumpArgs::try_parse_from(argv).map(drop).map_err(clap_err),
            Self::Replay => ReplayArgs::try_parse_from(argv).map(drop).map_err(clap_err),
            Self::Shared => SharedArgs::try_parse_from(argv).map(drop).map_err(clap_err),
            Self::Ublk => {
                let cli = pcache_ublk::cli::Cli::try_parse_from(argv).map_err(clap_err)?;
                if let pcache_ublk::cli::Command::Add(a) = cli.command {
                    a.validate().map_err(|e| (None, e.to_string()))?;
                }
                Ok(())
            }
        }
    }
}

/// A placeholder: `DEVICE`, `N`, `$PMEM`, `"$OUT/x"`, `$(cat pid)`, `<pid>`.
fn is_placeholder(w: &str) -> bool {
    w.contains('$')
        || (w.starts_with('<') && w.ends_with('>'))
        || (w.chars().any(|c| c.is_ascii_uppercase())
            && w.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
}

/// A placeholder becomes `1`, which every option of the tools accepts (a path, a number,
/// a size, a range), except `MODE`, a cache mode, which becomes `writeback`; in
/// `--flag=VALUE` only the value is replaced.
fn substitute(w: &str) -> String {
    let value = |v: &str| if v == "MODE" { "writeback" } else { "1" };
    match w.split_once('=') {
        Some((flag, v)) if flag.starts_with("--") && is_placeholder(v) => {
            format!("{flag}={}", value(v))
        }
        _ if is_placeholder(w) => value(w).to_string(),
        _ => w.to_string(),
    }
}

/// Words that stand for "more arguments": what follows is not a complete command line.
fn is_ellipsis(w: &str) -> bool {
    matches!(
        w,
        "..." | "…" | "ARGS" | "ARGS..." | "OPTIONS" | "[OPTIONS]"
    )
}

/// Errors that only say the command line is incomplete: what was given parsed.
fn incomplete(kind: Option<clap::error::ErrorKind>) -> bool {
    use clap::error::ErrorKind as K;
    matches!(
        kind,
        Some(
            K::MissingRequiredArgument
                | K::MissingSubcommand
                | K::DisplayHelpOnMissingArgumentOrSubcommand
        )
    )
}

fn help_or_version(kind: Option<clap::error::ErrorKind>) -> bool {
    use clap::error::ErrorKind as K;
    matches!(kind, Some(K::DisplayHelp | K::DisplayVersion))
}

fn check_tool(tool: Tool, c: &CmdLine) -> Result<(), String> {
    if c.origin == Origin::Synopsis {
        return check_synopsis(tool, &c.words);
    }
    let fragment = c.origin == Origin::Inline || c.words.iter().any(|w| is_ellipsis(w));
    let argv: Vec<String> = std::iter::once(tool.name().to_string())
        .chain(
            c.words[1..]
                .iter()
                .filter(|w| !is_ellipsis(w))
                .map(|w| substitute(w)),
        )
        .collect();
    let accept = |r: &Result<(), (Option<clap::error::ErrorKind>, String)>| match r {
        Ok(()) => true,
        Err((kind, _)) => help_or_version(*kind) || (fragment && incomplete(*kind)),
    };
    let res = tool.parse(&argv);
    if accept(&res) {
        return Ok(());
    }
    // A span may name an option without its value: `pcache-replay --export`.
    if fragment && argv.last().is_some_and(|w| w.starts_with('-')) {
        let with_value: Vec<String> = argv.iter().cloned().chain(["1".to_string()]).collect();
        if accept(&tool.parse(&with_value)) {
            return Ok(());
        }
    }
    Err(res
        .map_err(|(_, msg)| first_line(&msg))
        .expect_err("not accepted"))
}

fn first_line(msg: &str) -> String {
    msg.lines().next().unwrap_or("").to_string()
}

/// A synopsis: `tool REQUIRED... [--opt ARG] [--a | --b] POSITIONAL`.
fn check_synopsis(tool: Tool, words: &[String]) -> Result<(), String> {
    let mut bare = vec![tool.name().to_string()];
    let mut alternatives: Vec<Vec<String>> = Vec::new();
    let mut depth = 0;
    for w in &words[1..] {
        match w.as_str() {
            "[" => {
                depth += 1;
                if depth == 1 {
                    alternatives.push(Vec::new());
                }
            }
            "]" => depth -= 1,
            "|" if depth > 0 => alternatives.push(Vec::new()),
            "|" => return Err("a `|` outside brackets".into()),
            w if is_ellipsis(w) => {}
            w if depth > 0 => alternatives.last_mut().expect("opened").push(substitute(w)),
            w => bare.push(substitute(w)),
        }
    }
    match tool.parse(&bare) {
        Ok(()) => {}
        Err((kind, _)) if help_or_version(kind) => {}
        Err((_, msg)) => return Err(format!("its required part: {}", first_line(&msg))),
    }
    for alt in &alternatives {
        let argv: Vec<String> = bare.iter().chain(alt).cloned().collect();
        match tool.parse(&argv) {
            Ok(()) => {}
            Err((kind, _)) if incomplete(kind) || help_or_version(kind) => {}
            Err((_, msg)) => return Err(format!("[{}]: {}", alt.join(" "), first_line(&msg))),
        }
    }
    // Every visible option is in the synopsis (of the subcommand it names, for ublk).
    let mut cmd = tool.command();
    for w in &bare[1..] {
        match cmd.find_subcommand(w) {
            Some(sub) => cmd = sub.clone(),
            None => break,
        }
    }
    let missing: Vec<String> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional())
        .filter_map(|a| {
            a.get_long()
                .map(|l| format!("--{l}"))
                .or_else(|| a.get_short().map(|c| format!("-{c}")))
        })
        .filter(|l| !words.contains(l))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("the synopsis misses {}", missing.join(", ")))
    }
}

/// A `cargo xtask` task: its name and, when its entry point was found, its flags.
#[derive(Debug)]
struct XTask {
    name: String,
    flags: Option<Vec<String>>,
}

/// The tasks of `xtask/src/main.rs`'s `TASKS` table (`name: "…"`, `run: module::fn`).
fn xtasks() -> Vec<XTask> {
    let src_dir = repo().join("xtask/src");
    let main = std::fs::read_to_string(src_dir.join("main.rs")).expect("xtask/src/main.rs");
    let table = &main[main
        .find("const TASKS")
        .expect("a TASKS table in xtask/src/main.rs")..];
    let mut out = Vec::new();
    let mut rest = table;
    while let Some(i) = rest.find("name: \"") {
        rest = &rest[i + 7..];
        let name = rest[..rest.find('"').expect("closing quote")].to_string();
        let flags = rest.find("run: ").and_then(|r| {
            let path = rest[r + 5..].split([',', '\n', ' ']).next()?;
            task_flags(&src_dir, path.trim())
        });
        out.push(XTask { name, flags });
    }
    out
}

/// The flags of the task whose entry point is `path` (`qemu::main`, `qemu::bench_main`):
/// the string literals in match-arm position (`"--quick" =>`, `"-v" | "--verbose"`,
/// `starts_with("--filter=")`) of the file that defines the function.
fn task_flags(src_dir: &Path, path: &str) -> Option<Vec<String>> {
    let (module, func) = path.rsplit_once("::")?;
    let find_file = |base: PathBuf| {
        [base.with_extension("rs"), base.join("mod.rs")]
            .into_iter()
            .find(|p| p.is_file())
    };
    let base = src_dir.join(module.replace("::", "/"));
    let file = find_file(base.clone())?;
    let src = std::fs::read_to_string(&file).ok()?;
    let src = if src.contains(&format!("fn {func}(")) {
        src
    } else {
        // `pub use sub::name as func;`
        let line = src.lines().find(|l| {
            l.trim_start().starts_with("pub use") && l.contains(&format!(" as {func};"))
        })?;
        let target = line.trim_start().strip_prefix("pub use")?.trim();
        let (sub, _) = target.split_once("::")?;
        std::fs::read_to_string(find_file(base.join(sub))?).ok()?
    };
    let mut flags = Vec::new();
    let mut at = 0;
    while let Some(i) = src[at..].find("\"-") {
        let start = at + i + 1;
        let Some(len) = src[start..].find('"') else {
            break;
        };
        let lit = &src[start..start + len];
        let before = src[..start - 1].trim_end();
        let after = src[start + len + 1..].trim_start();
        if after.starts_with("=>") || after.starts_with('|') || before.ends_with('|') {
            flags.push(lit.to_string());
        } else if before.ends_with("starts_with(") {
            flags.push(lit.trim_end_matches('=').to_string());
        }
        at = start + len + 1;
    }
    Some(flags)
}

fn check_xtask(tasks: &[XTask], words: &[String]) -> Result<(), String> {
    let words: Vec<String> = words
        .iter()
        .map(|w| w.trim_matches(['[', ']']).to_string())
        .filter(|w| !w.is_empty() && w != "|")
        .collect();
    let Some(name) = words.get(2) else {
        return Ok(()); // `cargo xtask`: the task list
    };
    let Some(task) = tasks.iter().find(|t| &t.name == name) else {
        let known: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        return Err(format!(
            "no xtask task `{name}` (tasks: {})",
            known.join(", ")
        ));
    };
    for w in words[3..].iter().filter(|w| w.starts_with('-')) {
        let flag = w.split('=').next().unwrap_or(w);
        if matches!(flag, "-h" | "--help") {
            continue;
        }
        let Some(flags) = &task.flags else {
            return Err(format!(
                "cannot find the entry point of task `{name}` to check {flag}"
            ));
        };
        if !flags.iter().any(|f| f == flag) {
            return Err(format!(
                "task `{name}` has no flag {flag} (it has {})",
                flags.join(" ")
            ));
        }
    }
    Ok(())
}

/// What a checked line turned out to be.
#[derive(Debug, Default)]
struct Tally {
    tool_lines: usize,
    /// Of the tool lines: from shell blocks, synopses, code spans.
    by_origin: [usize; 3],
    xtask_lines: usize,
    script_lines: usize,
    external_lines: usize,
    unchecked: Vec<String>,
    failures: Vec<String>,
}

fn check_markdown(file: &str, md: &str, tasks: &[XTask]) -> (Vec<CmdLine>, Tally) {
    let cmds = extract::extract(md);
    let mut t = Tally::default();
    for c in &cmds {
        let text = c.words.join(" ");
        let at = format!("{file}:{}: `{text}`", c.line);
        if let Some((_, _, why)) = UNCHECKED
            .iter()
            .find(|(f, l, _)| *f == file && text.contains(l))
        {
            t.unchecked.push(format!("{at}: not checked: {why}"));
            continue;
        }
        let program = c.words[0].as_str();
        let res = if let Some(tool) = Tool::of(program) {
            t.tool_lines += 1;
            t.by_origin[c.origin as usize] += 1;
            check_tool(tool, c)
        } else if program == "cargo" && c.words.get(1).is_some_and(|w| w == "xtask") {
            t.xtask_lines += 1;
            check_xtask(tasks, &c.words)
        } else if program == "cargo" && is_fuzz_line(&c.words) {
            t.xtask_lines += 1;
            check_fuzz(&c.words)
        } else if program == "cargo" {
            Err("a cargo command other than `cargo xtask`: not checked; add it here".into())
        } else if program.contains('/') && !program.starts_with('/') {
            t.script_lines += 1;
            check_script(program)
        } else if EXTERNAL.iter().any(|(p, _)| *p == program) {
            t.external_lines += 1;
            Ok(())
        } else {
            Err(format!(
                "`{program}` is neither a pcache tool, `cargo xtask`, a script of the repository \
                 nor in EXTERNAL (add it there, saying why it is not checked)"
            ))
        };
        if let Err(e) = res {
            t.failures.push(format!("{at}: {e}"));
        }
    }
    (cmds, t)
}

/// A cargo line about the fuzz crate: `cargo fuzz ...`, or a cargo command on
/// `fuzz/Cargo.toml`.
fn is_fuzz_line(words: &[String]) -> bool {
    words.get(1).is_some_and(|w| w == "fuzz")
        || words
            .windows(2)
            .any(|w| w[0] == "--manifest-path" && w[1] == "fuzz/Cargo.toml")
}

/// `cargo fuzz SUB [TARGET] [INPUT]`: SUB is one of cargo-fuzz's, TARGET a `[[bin]]` of
/// `fuzz/Cargo.toml`; `cargo run --manifest-path fuzz/Cargo.toml --example NAME`: NAME is
/// a file of `fuzz/examples/`. Placeholders (`TARGET`, `<file>`) stand for any.
fn check_fuzz(words: &[String]) -> Result<(), String> {
    let manifest = std::fs::read_to_string(repo().join("fuzz/Cargo.toml"))
        .map_err(|e| format!("fuzz/Cargo.toml: {e}"))?;
    let targets: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|b| b.split("name = \"").nth(1)?.split('"').next())
        .collect();
    if words.get(1).is_some_and(|w| w == "fuzz") {
        const SUBS: &[&str] = &["build", "run", "list", "cmin", "tmin", "coverage", "fmt"];
        let sub = words.get(2).map_or("", String::as_str);
        if !SUBS.contains(&sub) {
            return Err(format!("`cargo fuzz {sub}`: not a cargo-fuzz subcommand"));
        }
        let target = words[3..].iter().find(|w| !w.starts_with('-'));
        return match target {
            Some(t) if !is_placeholder(t) && !targets.contains(&t.as_str()) => Err(format!(
                "no fuzz target `{t}` in fuzz/Cargo.toml (targets: {})",
                targets.join(", ")
            )),
            _ => Ok(()),
        };
    }
    let example = words
        .windows(2)
        .find(|w| w[0] == "--example")
        .map(|w| w[1].as_str());
    match (words.get(1).map(String::as_str), example) {
        (Some("run" | "build"), Some(e))
            if repo().join(format!("fuzz/examples/{e}.rs")).is_file() =>
        {
            Ok(())
        }
        (Some("run" | "build"), Some(e)) => Err(format!("no example fuzz/examples/{e}.rs")),
        _ => Err("a cargo command on fuzz/Cargo.toml other than running an example".into()),
    }
}

fn check_script(path: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let p = repo().join(path.trim_start_matches("./"));
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!("{} is not an executable file", p.display())),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

#[path = "docs/run.rs"]
mod run;

#[test]
fn every_documented_command_line_parses() {
    let tasks = xtasks();
    assert!(
        tasks.iter().any(|t| t.name == "qemu-test"),
        "the TASKS table was not read: {tasks:?}"
    );
    let bins = run::binaries()
        .map_err(|why| eprintln!("docs: NOT RUN: {why}"))
        .ok();
    let mut failures = Vec::new();
    let mut used_unchecked = Vec::new();
    let mut total = Tally::default();
    let mut ran = 0;
    for doc in documents() {
        let name = doc
            .strip_prefix(repo())
            .expect("in the repo")
            .display()
            .to_string();
        let md = std::fs::read_to_string(&doc).expect("readable document");
        let (cmds, t) = check_markdown(&name, &md, &tasks);
        failures.extend(t.failures);
        used_unchecked.extend(t.unchecked);
        total.tool_lines += t.tool_lines;
        for (a, b) in total.by_origin.iter_mut().zip(t.by_origin) {
            *a += b;
        }
        total.xtask_lines += t.xtask_lines;
        total.script_lines += t.script_lines;
        total.external_lines += t.external_lines;
        if let Some(bins) = &bins {
            match run::run_document(bins, &name, &cmds) {
                Ok(n) => ran += n,
                Err(e) => failures.push(e),
            }
        }
    }
    for (file, line, why) in UNCHECKED {
        assert!(
            used_unchecked
                .iter()
                .any(|u| u.starts_with(file) && u.contains(line)),
            "UNCHECKED entry matches no line any more: {file}: {line} ({why})"
        );
    }
    let [shell, synopsis, inline] = total.by_origin;
    eprintln!(
        "docs: {} tool command lines parsed ({shell} in shell blocks, {synopsis} synopses, \
         {inline} code spans), {} cargo xtask lines, {} scripts, {} external commands allowed, \
         {} not checked, {ran} command lines run",
        total.tool_lines,
        total.xtask_lines,
        total.script_lines,
        total.external_lines,
        used_unchecked.len()
    );
    assert!(total.tool_lines > 30, "too few command lines found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[path = "docs/synthetic.rs"]
mod synthetic;
