//! A checkpoint from arbitrary bytes: loaded or refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ember_engine::Network::from_bytes(data, None, &candle_core::Device::Cpu, "fuzz");
});
