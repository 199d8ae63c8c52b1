//! `cargo run --release -p ember-engine --example make_default_net [PATH]`: writes the
//! network the `ember` binary embeds when no trained checkpoint is given
//! (`models/default.safetensors`). The network is a freshly initialised 64x3 with a fixed
//! seed, so the file is reproducible byte for byte; a trained checkpoint of any
//! architecture may replace it (the engine reads the architecture from the metadata).

use candle_core::Device;
use ember_engine::{NetConfig, Network};
use std::path::PathBuf;

/// Seed of the embedded default network; changing it changes the committed file.
const SEED: u64 = 20_241_124;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/default.safetensors"));
    let network = Network::new(
        NetConfig {
            filters: 64,
            blocks: 3,
        },
        &Device::Cpu,
        SEED,
    )?;
    network.save(&path)?;
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "wrote {} ({} network, {} parameters, {bytes} bytes)",
        path.display(),
        network.config,
        network.parameter_count()
    );
    Ok(())
}
