//! `cargo run --release --example train_step_bench [-- STEPS]`: seconds per training step
//! (64x3, batch 256, f32, CPU), split into forward / backward / optimiser. With
//! `EMBER_NO_MMAP=1` it then repeats with `sys::keep_large_allocations_on_heap`; with
//! `EMBER_TUNED=1` it applies `sys::configure_cpu_runtime` from the start.
use ember_engine::bench::sample_positions;
use ember_engine::net::{NetConfig, Network};
use ember_engine::selfplay::Sample;
use ember_engine::train::{TrainConfig, Trainer, TrainingBatch};
use shakmaty::Position;

fn main() -> anyhow::Result<()> {
    if std::env::var_os("EMBER_TUNED").is_some() {
        ember_engine::sys::configure_cpu_runtime();
    }
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let net = Network::new(NetConfig::default(), &candle_core::Device::Cpu, 1)?;
    let mut trainer = Trainer::new(net, TrainConfig::default())?;
    let samples: Vec<Sample> = sample_positions(256, 3)
        .into_iter()
        .map(|p| {
            let n = p.legal_moves().len();
            let policy = p
                .legal_moves()
                .iter()
                .map(|m| {
                    (
                        ember_engine::encoding::move_to_index(m, p.turn()) as u16,
                        1.0 / n as f32,
                    )
                })
                .collect();
            Sample {
                position: p,
                visits: policy,
                result: 0.0,
                root_q: 0.0,
                reply: None,
                plies_left: None,
            }
        })
        .collect();
    let refs: Vec<&Sample> = samples.iter().collect();
    let batch = TrainingBatch::from_samples(&refs);
    trainer.train_step(&batch)?;
    let run = |label: &str, trainer: &mut Trainer| -> anyhow::Result<()> {
        let (mut f, mut b, mut o) = (0.0, 0.0, 0.0);
        let t = std::time::Instant::now();
        for _ in 0..steps {
            let r = trainer.train_step(&batch)?;
            f += r.forward.as_secs_f64();
            b += r.backward.as_secs_f64();
            o += r.optimizer.as_secs_f64();
        }
        let n = steps as f64;
        let total = t.elapsed().as_secs_f64() / n;
        println!("{label}: {:.3} s/step (forward {:.3}, backward {:.3}, optimiser {:.3}), {:.0} samples/s", total, f / n, b / n, o / n, 256.0 / total);
        Ok(())
    };
    run("default allocator settings", &mut trainer)?;
    if std::env::var("EMBER_NO_MMAP").is_ok() {
        ember_engine::sys::keep_large_allocations_on_heap();
        trainer.train_step(&batch)?;
        run("large allocations kept on the heap", &mut trainer)?;
    }
    Ok(())
}
