//! Fuzzes the engine's walk over a block of one-number-per-line input: the first byte picks the
//! rules, the rest is the block. The SWAR fast path and the general classifier must agree on
//! every line, and the lines must tile the block (see `processor::scan::check_walk`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use processor::nhs::Rules;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, block)) = data.split_first() else {
        return;
    };
    let rules = Rules {
        strict: flags & 1 != 0,
        reject_placeholders: flags & 2 != 0,
    };
    processor::scan::check_walk(block, rules);
});
