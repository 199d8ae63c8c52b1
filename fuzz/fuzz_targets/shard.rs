//! A replay shard from arbitrary bytes: its good records, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ember_engine::replay::parse_shard(data, "fuzz");
});
