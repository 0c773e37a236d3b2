//! Strict, salvage, report-mode and read-write opens of a valid base image with patches
//! (`pcache_fuzz::patch`, `pcache_fuzz::check::open`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let input = pcache_fuzz::patch::Input::decode(data);
    let (base, img) = input.build(pcache_fuzz::base::all());
    pcache_fuzz::check::open(&img, input.backing_size(base));
});
