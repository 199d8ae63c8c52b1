//! Publishing: putting a network where the UCI engine `ember` finds it,
//! `MODELS/latest.safetensors` (`--models-dir`, default `models/`).
//!
//! A GUI user's network is never replaced by accident. A training run publishes a
//! promoted network only when the published file is absent or was published by the same
//! run (checkpoints carry the run's name in the metadata field [`RUN_FIELD`]); a network
//! of another run, or a file that does not read as a checkpoint, stays, and the log says
//! how to replace it deliberately (`trainer export`). The folder is checked to be
//! writable when the run starts, not at the first promotion.

use anyhow::{anyhow, Context, Result};
use ember_engine::files::{sweep_temporaries, write_atomic, Sweep};
use ember_engine::net::checkpoint::{declared_config, read_file, read_metadata};
use ember_engine::pipeline::run::RunDir;
use log::{info, warn};
use std::path::{Path, PathBuf};

/// Checkpoint metadata field naming the run that trained the network.
pub const RUN_FIELD: &str = "run";

/// The file `ember` plays with, inside a models folder.
pub const PUBLISHED: &str = "latest.safetensors";

pub struct Publisher {
    models_dir: PathBuf,
    /// The run whose promotions this publisher may publish.
    pub run: String,
}

impl Publisher {
    /// Checks that `models_dir` can be written (creating it), and removes the temporary
    /// files that interrupted writes left there.
    pub fn open(models_dir: &Path, run: &str) -> Result<Publisher> {
        prepare(models_dir, "--models-dir")?;
        Ok(Publisher {
            models_dir: models_dir.to_path_buf(),
            run: run.to_string(),
        })
    }

    pub fn target(&self) -> PathBuf {
        self.models_dir.join(PUBLISHED)
    }

    /// Publishes the checkpoint `bytes` (of `iteration` of this run) unless the published
    /// file belongs to something else; says which in the log.
    pub fn publish(&self, bytes: &[u8], iteration: u64, dir: &RunDir) -> Result<bool> {
        let to = self.target();
        if let Some(other) = self.foreign_owner(&to) {
            warn!(
                "{} not replaced: it holds {other}. This run's best network stays in {}; \
`trainer export --run {} --to {}` publishes it",
                to.display(),
                dir.best().display(),
                self.run,
                to.display()
            );
            return Ok(false);
        }
        write_atomic(&to, bytes)
            .with_context(|| format!("publishing the best network to {}", to.display()))?;
        info!(
            "published the best network (iteration {iteration}) to {}",
            to.display()
        );
        Ok(true)
    }

    /// What the published file is, when it is not a network of this run.
    fn foreign_owner(&self, path: &Path) -> Option<String> {
        if !path.exists() {
            return None;
        }
        let shown = path.display().to_string();
        let bytes = match read_file(path) {
            Ok(b) => b,
            Err(e) => return Some(format!("a file that cannot be read as a network ({e:#})")),
        };
        let meta = match read_metadata(&bytes, &shown) {
            Ok(m) => m,
            Err(e) => return Some(format!("a file that is not a network ({e:#})")),
        };
        let arch = declared_config(&meta, &shown)
            .map_or_else(|_| "network".to_string(), |c| format!("{c} network"));
        let iteration = meta.get("iteration").map_or("?", String::as_str);
        match meta.get(RUN_FIELD) {
            Some(run) if *run == self.run => None,
            Some(run) => Some(format!("a {arch} of run {run:?} (iteration {iteration})")),
            None => Some(format!(
                "a {arch} exported from outside a run (iteration {iteration})"
            )),
        }
    }
}

/// Creates `dir`, proves it writable with a probe file, and sweeps temporary files of
/// interrupted writes; an error names the folder and the `flag` that chose it.
pub fn prepare(dir: &Path, flag: &str) -> Result<()> {
    let probe = dir.join(format!(".write-probe.{}.tmp", std::process::id()));
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"probe"))
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| {
            anyhow!(
                "{flag} {}: the folder cannot be written ({e}); networks are published there",
                dir.display()
            )
        })?;
    for name in sweep_temporaries(dir, Sweep::DeadWriters) {
        info!(
            "removed {}, left by an interrupted write",
            dir.join(name).display()
        );
    }
    Ok(())
}
