//! An opening book (EPD or PGN) from arbitrary text: its openings or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ember_engine::matches::parse_openings(text, "fuzz");
    }
});
