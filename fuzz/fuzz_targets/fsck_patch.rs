//! fsck and dump of a valid base image with patches, against pcache's strict open
//! (`pcache_fuzz::patch`, `pcache_fuzz::check::fsck`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let input = pcache_fuzz::patch::Input::decode(data);
    let (base, img) = input.build(pcache_fuzz::base::all());
    pcache_fuzz::check::fsck(&img, input.backing_size(base));
});
