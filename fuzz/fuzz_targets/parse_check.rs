//! Fuzz the DSL front end: lexing, parsing, type checking and lowering must never panic or
//! overflow the stack, whatever the input; errors are fine.
//!
//!     cargo +nightly fuzz run parse_check fuzz/seeds -- -max_total_time=60
//!
//! (`fuzz/seeds/` holds valid kernels to start from; the working corpus `fuzz/corpus/` is
//! git-ignored.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        if let Err(d) = opc_dsl::check("fuzz.opc", src) {
            // Rendering is part of the contract too: it must name a location.
            assert!(d.rendered.starts_with("error: fuzz.opc:"));
        }
    }
});
