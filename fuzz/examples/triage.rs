//! Triage of an image target's input: prints the decoded patches, writes the image to a
//! sparse file (for `pcache-dump`/`pcache-fsck`), and says what pcache's strict and
//! salvage opens and fsck make of it.
//!
//! `cargo run --release --manifest-path fuzz/Cargo.toml --example triage -- (raw|patch) INPUT [IMAGE]`

use pcache_fuzz::backing::SparseBacking;
use pcache_fuzz::check::{chain, open_ro, presented};
use pcache_fuzz::patch::Input;
use pcache_fuzz::{base, media_of, raw_image};
use pcache_tools::fsck::{self, FsckOptions};
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(kind), Some(path)) = (args.first(), args.get(1)) else {
        eprintln!("usage: triage (raw|patch) INPUT [IMAGE]");
        std::process::exit(2);
    };
    let data = std::fs::read(path).expect("the input");
    let (img, backing_size) = if kind == "raw" {
        (raw_image(&data), 64 << 20)
    } else {
        let input = Input::decode(&data);
        let bases = base::all();
        println!("{input:#?}");
        let (b, img) = input.build(bases);
        println!(
            "base {} ({} bytes of backing)",
            b.name,
            input.backing_size(b)
        );
        (img, input.backing_size(b))
    };
    if let Some(out) = args.get(2) {
        img.write_to_file(std::path::Path::new(out))
            .expect("the image file");
        println!("image written to {out}; backing size {backing_size}");
    }
    for salvage in [false, true] {
        let backing = Arc::new(SparseBacking::new(backing_size));
        match open_ro(media_of(&img), backing, salvage) {
            Ok(c) => {
                println!("salvage {salvage}: opens; {:?}", c.salvage_report());
                println!("  {:?}", presented(&c, "triage"));
            }
            Err(e) => println!("salvage {salvage}: refused: {}", chain(&e)),
        }
    }
    let r = fsck::check(
        &img,
        &FsckOptions {
            backing_size: Some(backing_size),
            ..FsckOptions::default()
        },
    )
    .expect("reads");
    print!("{}", fsck::text(&r, "image"));
}
