#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracelake_fuzz_harness::xray_filter(data));
