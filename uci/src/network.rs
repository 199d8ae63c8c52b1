//! Where the engine's network comes from: the file named by `WeightsFile`, or the
//! network built into the binary (`models/default.safetensors`, the trained network
//! models/README.md describes), so that `ember` plays on a machine with nothing beside it.

use anyhow::{Context, Result};
use candle_core::Device;
use ember_engine::mcts::params::DEFAULT_CACHE_ENTRIES;
use ember_engine::mcts::{CachedEvaluator, NetEvaluator};
use ember_engine::net::describe_device;
use ember_engine::{DeviceChoice, Network, Precision};
use std::path::{Path, PathBuf};

use crate::options::EMBEDDED;

pub use ember_engine::net::EMBEDDED_NETWORK;

/// The checkpoint the trainer promotes, relative to the working directory.
const LATEST: &str = "models/latest.safetensors";

/// A loaded network, ready to evaluate.
pub struct LoadedNet {
    /// The network behind the engine's evaluation cache (`NNCacheSize`, set before each
    /// search).
    pub evaluator: CachedEvaluator<NetEvaluator>,
    /// "64x3 (training iteration 12, run gpu) from models/latest.safetensors on cpu", for
    /// `info string`.
    pub description: String,
    pub on_gpu: bool,
}

/// The default `WeightsFile`: `models/latest.safetensors` if it exists relative to the
/// working directory, else the same path relative to the executable's `../../` (the
/// workspace root when run from `target/release/`), else the embedded network.
pub fn default_weights() -> String {
    if Path::new(LATEST).is_file() {
        return LATEST.to_string();
    }
    let beside_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .map(|root| root.join(LATEST))
    });
    match beside_exe {
        Some(p) if p.is_file() => p.display().to_string(),
        _ => EMBEDDED.to_string(),
    }
}

/// Loads `weights` (a path or [`EMBEDDED`]) onto `device`. Errors name the file and the
/// problem (missing, truncated, corrupt, unknown architecture) and come from the engine's
/// checkpoint reader.
pub fn load(weights: &str, device: DeviceChoice, threads: usize) -> Result<LoadedNet> {
    let device: Device = device.open()?;
    let network = if weights == EMBEDDED {
        Network::from_bytes(EMBEDDED_NETWORK, None, &device, EMBEDDED)
            .context("loading the embedded network")?
    } else {
        // The checkpoint reader refuses what is missing, not a regular file (a directory,
        // `/dev/zero`), too large, corrupt, or of an architecture out of bounds.
        Network::load(&PathBuf::from(weights), None, &device).context("WeightsFile")?
    };
    // f32 everywhere: the CPU path is f32-only, and it keeps GPU results comparable.
    let mut evaluator = NetEvaluator::new(&network, Precision::F32)?;
    evaluator.set_threads(threads);
    let on_gpu = !device.is_cpu();
    // The CPU thread count is the `Threads` option's business, not the device's.
    let place = if on_gpu {
        describe_device(&device)
    } else {
        "cpu".to_string()
    };
    let run = network
        .run
        .as_ref()
        .map_or(String::new(), |r| format!(", run {r}"));
    let description = format!(
        "{} (training iteration {}{run}) from {weights} on {place}",
        network.config, network.iteration
    );
    Ok(LoadedNet {
        evaluator: CachedEvaluator::new(evaluator, DEFAULT_CACHE_ENTRIES),
        description,
        on_gpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_engine::mcts::Search;
    use ember_engine::phase_times::PhaseTimes;
    use ember_engine::{Game, SearchParams};
    use shakmaty::Position;

    #[test]
    fn embedded_network_loads_and_plays_a_legal_move() {
        let mut net = load(EMBEDDED, DeviceChoice::Cpu, 1).expect("embedded network loads");
        let game = Game::new();
        let mut search = Search::new(
            &game,
            SearchParams {
                max_batch: 16,
                ..SearchParams::default()
            },
        );
        search
            .run_until_visits(&mut net.evaluator, 64, &mut PhaseTimes::default())
            .unwrap();
        let best = search.best_move().expect("a move");
        assert!(game.position().is_legal(best));
    }

    #[test]
    fn embedded_network_is_a_real_checkpoint() {
        let meta =
            ember_engine::net::checkpoint::read_metadata(EMBEDDED_NETWORK, EMBEDDED).unwrap();
        assert!(!meta.is_empty());
    }

    #[test]
    fn missing_weights_file_is_an_error_naming_it() {
        let err = load("/nonexistent/file.safetensors", DeviceChoice::Cpu, 1)
            .err()
            .expect("error");
        assert!(
            format!("{err:#}").contains("/nonexistent/file.safetensors"),
            "{err:#}"
        );
    }

    #[test]
    fn truncated_weights_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("ember-uci-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("truncated.safetensors");
        std::fs::write(&path, &EMBEDDED_NETWORK[..EMBEDDED_NETWORK.len() / 2]).unwrap();
        let result = load(path.to_str().unwrap(), DeviceChoice::Cpu, 1);
        std::fs::remove_dir_all(&dir).ok();
        assert!(result.is_err());
    }
}
