//! `cargo run --release --example quickbench [NAME...]`: the engine benchmarks without the trainer.
fn main() -> anyhow::Result<()> {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let opts = ember_engine::bench::BenchOptions::for_device(candle_core::Device::Cpu);
    ember_engine::bench::run(&opts, &only, |v| println!("{v}"))
}
