//! Every on-media record parser of pcache-format on arbitrary bytes
//! (`pcache_fuzz::records`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pcache_fuzz::records::run(data));
