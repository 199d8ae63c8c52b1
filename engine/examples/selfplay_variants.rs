//! `cargo run --release --example selfplay_variants`: self-play throughput for several
//! (games in flight, leaves per game) pairs in one run, for choosing defaults.
use ember_engine::bench::{bench_selfplay, BenchOptions};

fn main() -> anyhow::Result<()> {
    let mut opts = BenchOptions::for_device(candle_core::Device::Cpu);
    opts.selfplay_seconds = 12.0;
    for (g, l) in [(64, 4), (128, 2), (256, 1), (32, 8)] {
        opts.selfplay_games_in_flight = g;
        opts.selfplay_leaves_per_game = l;
        println!("{}", bench_selfplay(&opts)?);
    }
    Ok(())
}
