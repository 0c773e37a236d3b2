//! Strict, salvage, report-mode and read-write opens of an arbitrary image: the input's
//! bytes fill the device's metadata windows and then segment 0's log
//! (`pcache_fuzz::raw_image`), the rest of the 512 MiB device is zero
//! (`pcache_fuzz::check::open`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pcache_fuzz::check::open(&pcache_fuzz::raw_image(data), pcache_fuzz::RAW_BACKING);
});
