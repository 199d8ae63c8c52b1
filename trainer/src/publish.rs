//! Publishing: putting a network where the UCI engine `ember` finds it,
//! `MODELS/latest.safetensors` (`--models-dir`, default `models/`).
//!
//! A run never gives a GUI user a weaker network. It offers its best network at the
//! strength curve's iterations and at its end: the network plays the one `ember` would
//! otherwise play (the published file, or the network built into the binaries when none
//! is published) in a publishing match ([`PublishStage`]), and replaces it only when the
//! lower end of the 95% Elo interval is above 0. A published file that does not read as
//! a network is never replaced by a run. `trainer export` publishes anything
//! deliberately, and `--no-publish` turns publishing off. The folder is checked to be
//! writable when the run starts, not at the first offer.

use anyhow::{anyhow, Context, Result};
use ember_engine::files::{sweep_temporaries, write_atomic, Sweep};
use ember_engine::net::checkpoint::read_file;
use ember_engine::net::Network;
use ember_engine::pipeline::publish_stage::PublishStage;
use ember_engine::pipeline::Observer;
use ember_engine::players::{EmberSetup, Prepared};
use ember_engine::stats::format_elo;
use log::{info, warn};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use ember_engine::net::checkpoint::RUN_FIELD;

/// The file `ember` plays with, inside a models folder.
pub const PUBLISHED: &str = "latest.safetensors";

pub struct Publisher {
    models_dir: PathBuf,
    /// The run whose networks this publisher offers.
    pub run: String,
    /// False with `--no-publish`.
    pub enabled: bool,
}

impl Publisher {
    /// Checks that `models_dir` can be written (creating it), and removes the temporary
    /// files that interrupted writes left there. With `enabled` false nothing is touched.
    pub fn open(models_dir: &Path, run: &str, enabled: bool) -> Result<Publisher> {
        if enabled {
            prepare(models_dir, "--models-dir")?;
        }
        Ok(Publisher {
            models_dir: models_dir.to_path_buf(),
            run: run.to_string(),
            enabled,
        })
    }

    pub fn target(&self) -> PathBuf {
        self.models_dir.join(PUBLISHED)
    }

    /// The start-up line: where this run publishes, and on what condition.
    pub fn describe(&self, games: usize, nodes: u32) -> String {
        if !self.enabled {
            return "publishing: off (--no-publish); `trainer export` publishes a network deliberately"
                .to_string();
        }
        format!(
            "publishing: to {} (the network `ember` plays), only when the run's best network beats the network \
there, or the one built into the binaries when none is there, in a match of {games} games at {nodes} nodes a \
move (the lower end of the 95% Elo interval above 0)",
            self.target().display()
        )
    }

    /// Offers the checkpoint `bytes` (the best network `best`, iteration `iteration` of
    /// this run): plays the publishing match and publishes it if it won. Returns whether
    /// the published file now holds it.
    pub fn offer(
        &self,
        bytes: &[u8],
        best: &Network,
        iteration: u64,
        stage: &PublishStage,
        setup: &EmberSetup,
        observer: &mut dyn Observer,
    ) -> Result<bool> {
        let to = self.target();
        let shown = to.display().to_string();
        let export = format!(
            "`trainer export --run {} --to {shown}` publishes it deliberately",
            self.run
        );
        let incumbent = if to.exists() {
            let found = read_file(&to).and_then(|b| {
                if b == bytes {
                    return Ok(None);
                }
                Network::from_bytes(&b, None, &setup.device, &shown).map(Some)
            });
            match found {
                Ok(None) => {
                    info!("publishing: {shown} already holds iteration {iteration} of this run");
                    return Ok(true);
                }
                Ok(Some(net)) => {
                    let label = format!("the published {}", describe(&net));
                    Prepared::from_network(Arc::new(net), label)
                }
                Err(e) => {
                    warn!(
                        "publishing: {shown} not replaced: it does not read as a network ({e:#}); {export}"
                    );
                    return Ok(false);
                }
            }
        } else {
            let bytes = setup
                .embedded
                .ok_or_else(|| anyhow!("no network is built into this program"))?;
            let net = Network::from_bytes(bytes, None, &setup.device, "the built-in network")?;
            let label = format!("the built-in {}", describe(&net));
            Prepared::from_network(Arc::new(net), label)
        };
        let label = format!("iteration {iteration} of run {}", self.run);
        info!(
            "publishing match: {label} vs {}, {} games at {} nodes a move",
            incumbent.label(),
            stage.book.games + stage.book.games % 2,
            stage.book.nodes
        );
        let out = stage.run(best, &label, &incumbent, setup, observer)?;
        let t = out.report.trinomial;
        let e = out.estimate;
        let result = format!(
            "+{} ={} -{}, Elo {} [95%: {}, {}] over {} pairs, {:.1}s",
            t.wins,
            t.draws,
            t.losses,
            format_elo(e.elo),
            format_elo(e.elo_low),
            format_elo(e.elo_high),
            e.units,
            out.wall.as_secs_f64()
        );
        if !out.stronger {
            info!(
                "not published: {label} did not beat {} ({result}); {shown} is unchanged. {export}",
                incumbent.label()
            );
            return Ok(false);
        }
        write_atomic(&to, bytes).with_context(|| format!("publishing {label} to {shown}"))?;
        info!(
            "published {label} to {shown}: it beat {} ({result})",
            incumbent.label()
        );
        Ok(true)
    }
}

/// "64x3 network of run gpu (iteration 64)".
fn describe(net: &Network) -> String {
    match &net.run {
        Some(run) => format!(
            "{} network of run {run} (iteration {})",
            net.config, net.iteration
        ),
        None => format!("{} network (iteration {})", net.config, net.iteration),
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
