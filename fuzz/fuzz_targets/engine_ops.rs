//! Structure-aware engine operation sequences against a model of the device
//! (`pcache_fuzz::ops`).
#![no_main]

libfuzzer_sys::fuzz_target!(|script: pcache_fuzz::ops::Script| pcache_fuzz::ops::run(&script));
