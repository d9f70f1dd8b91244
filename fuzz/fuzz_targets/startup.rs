#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgcast::fuzz_entry::startup(data));
