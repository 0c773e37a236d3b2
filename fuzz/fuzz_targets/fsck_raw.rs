//! fsck and dump of an arbitrary image, against pcache's strict open: the input's bytes
//! fill the device's metadata windows and then segment 0's log
//! (`pcache_fuzz::raw_image`, `pcache_fuzz::check::fsck`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pcache_fuzz::check::fsck(&pcache_fuzz::raw_image(data), pcache_fuzz::RAW_BACKING);
});
