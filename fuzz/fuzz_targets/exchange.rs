//! The distributed exchange's records (published.json, a shard's record, config.json)
//! from arbitrary bytes, read through a folder exchange.
#![no_main]
use ember_engine::pipeline::exchange::Exchange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("shards")).unwrap();
    for name in ["published.json", "shards/w-000001.json", "config.json"] {
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    let x = Exchange::new(dir.path());
    if let Ok(Some(p)) = x.published() {
        let _ = x.read_network(&p);
    }
    let _ = x.read_meta("w-000001");
    let _ = x.config::<ember_engine::pipeline::run::RunState>();
});
