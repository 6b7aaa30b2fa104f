#![no_main]
use libfuzzer_sys::fuzz_target;

// placeholder: filled in with the real parser by its issue
fuzz_target!(|_data: &[u8]| {});
