//! The checks on synthetic documents: each fails on what a drifted document would say.

use super::{check_markdown, xtasks};

fn failures(md: &str) -> Vec<String> {
    check_markdown("synthetic.md", md, &xtasks()).1.failures
}

#[test]
fn a_documented_flag_that_does_not_exist_fails() {
    assert_eq!(
        failures("```sh\npcache-fsck --json /dev/dax0.0\n```\n"),
        Vec::<String>::new()
    );
    let f = failures("Text.\n\n```sh\npcache-fsck --frobnicate /dev/dax0.0   # removed\n```\n");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].starts_with("synthetic.md:4: `pcache-fsck --frobnicate /dev/dax0.0`"),
        "{f:?}"
    );
    assert!(f[0].contains("--frobnicate"), "{f:?}");
}

#[test]
fn the_old_retirement_command_fails() {
    // What docs/operations.md said before: replay takes --cache and --backing.
    let f = failures("```sh\npcache-replay --writeback /dev/dax0.0 /dev/sdb\n```\n");
    assert_eq!(f.len(), 1, "{f:?}");
    let ok = "```sh\npcache-replay --cache /dev/dax0.0 --backing /dev/sdb --writeback\n```\n";
    assert!(failures(ok).is_empty());
}

#[test]
fn continuations_spans_values_and_validation_are_checked() {
    // Continued over two lines, with a value clap refuses (gc_percent is 0..=90).
    assert_eq!(
        failures("```sh\npcache-mkfs \\\n    --gc-percent 95 /dev/x\n```\n").len(),
        1
    );
    // A code span may leave out required arguments, not name a wrong one.
    assert!(failures("Use `pcache-ublk add --data-crc` and `pcache-ublk del -n ID`.\n").is_empty());
    assert_eq!(
        failures("Use `pcache-dump --keys --frob\nIMAGE`.\n").len(),
        1
    );
    // `add`'s own validation runs too (a queue count of 0).
    assert_eq!(
        failures("`pcache-ublk add --queues 0 --cache c --backing b`\n").len(),
        1
    );
    // A shell line must be complete, unless it says `...`.
    assert_eq!(
        failures("```sh\npcache-ublk add --cache /dev/dax0.0\n```\n").len(),
        1
    );
    assert!(failures("```sh\npcache-ublk add --cache /dev/dax0.0 ...\n```\n").is_empty());
    // Placeholders and variables stand for values.
    assert!(
        failures("```sh\npcache-ublk status -n ID --json\npcache-fsck \"$PMEM\"\n```\n").is_empty()
    );
}

#[test]
fn a_synopsis_names_every_option_and_each_alternative_parses() {
    let f = failures("```text\npcache-mkfs [--data-crc] [--force] DEVICE\n```\n");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].contains("misses --gc-percent, --cache-mode, --quiet"),
        "{f:?}"
    );
    let f = failures(
        "```text\npcache-replay --cache DEV --backing DEV [--export FILE | --writeback --bogus] [--json]\n```\n",
    );
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].contains("--bogus"), "{f:?}");
    // The required part alone must parse.
    let f = failures("```text\npcache-fsck [--repair] [--json] [--no-data-crc]\n    [--backing-size SIZE | --backing PATH]\n```\n");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].contains("required part"), "{f:?}");
}

#[test]
fn xtask_lines_scripts_and_other_programs() {
    let md = "```sh\n\
        cargo xtask qemu-test --quick --filter=smoke   # fine\n\
        cargo xtask qemu-test --frob\n\
        cargo xtask nosuch\n\
        frobnicator --x\n\
        .ci/run\n\
        ./no/such/script\n\
        systemctl status pcache-ublk@0 | cat\n\
        ```\n";
    let lines: Vec<String> = failures(md)
        .iter()
        .map(|f| f.split(": ").next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "synthetic.md:3",
            "synthetic.md:4",
            "synthetic.md:5",
            "synthetic.md:7"
        ]
    );
}
