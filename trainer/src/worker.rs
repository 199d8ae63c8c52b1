//! `trainer worker`: a self-play worker of distributed training. It needs nothing but the
//! run folder (see [`ember_engine::pipeline::exchange`]; a path or `s3://...`): the run's
//! `config.json` gives the self-play settings, `published.json` the network. It plays a
//! shard's worth of games into a local scratch folder, stores the shard, its games and its
//! record in the run folder, looks for a newer network, and goes on, until stopped or for
//! `--games`.
//!
//! Stopping: SIGTERM or SIGINT stops the worker at once. The shard being played is
//! discarded (its scratch files removed); the shards already stored stay complete. A kill
//! -9 leaves the scratch files behind instead (and, in a folder, perhaps a temporary file
//! of a write), which the worker removes when it starts again under the same id (the
//! learner removes such temporary files once they are an hour old); neither is ever read
//! as data.

use crate::cli::WorkerArgs;
use crate::config::{derive_seed, RunConfig};
use anyhow::{Context, Result};
use ember_engine::net::{describe_device, Network};
use ember_engine::pipeline::exchange::{
    check_worker_id, shard_name, with_retry, Exchange, ShardMeta,
};
use ember_engine::pipeline::Quiet;
use ember_engine::DeviceChoice;
use log::info;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The random stream of a worker's shards (see [`derive_seed`]).
const STREAM_WORKER: u64 = 200;
/// How often a worker waiting for the learner looks again.
const WAIT_POLL: Duration = Duration::from_millis(500);

static STOP: AtomicBool = AtomicBool::new(false);
/// The scratch folder of the shard being played, removed when the worker is stopped.
static UNFINISHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub fn run(args: &WorkerArgs) -> Result<()> {
    let exchange = crate::storage::open_exchange(&args.run_dir)?;
    let id = match &args.worker_id {
        Some(id) => id.clone(),
        None => default_id(),
    };
    check_worker_id(&id)?;
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build_global()
            .context("setting the worker's threads")?;
    }
    stop_on_signals();

    let cfg: RunConfig = wait_for(&exchange, args.retries, "the run's config.json", |x| {
        x.config::<RunConfig>()
    })
    .with_context(|| format!("reading {}/config.json", exchange.describe()))?;
    let device = args.device.parse::<DeviceChoice>()?.open()?;
    let precision = cfg.precision_on(&device)?;
    let gpu = !device.is_cpu();
    for name in exchange.sweep_unfinished(Some(&id), Duration::ZERO) {
        info!("removed {name}, left unfinished by this worker's earlier process");
    }
    let scratch = args
        .scratch
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("ember-worker-{id}"));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("clearing {}", scratch.display()))?;
        info!(
            "cleared {}, left by this worker's earlier process",
            scratch.display()
        );
    }
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut seq = with_retry("listing the shards", args.retries, || {
        exchange.next_seq(&id)
    })?;
    info!(
        "worker {id}: playing into {} on {} (next shard {})",
        exchange.describe(),
        describe_device(&device),
        shard_name(&id, seq)
    );
    info!(
        "publishing: none from a worker (it writes no models folder); its learner, `trainer learn --run-dir {}`, \
publishes to its --models-dir",
        exchange.describe()
    );

    let shard_games = args.shard_games.unwrap_or(cfg.selfplay.games).max(1);
    let mut network: Option<(u64, Network)> = None;
    let mut played = 0usize;
    let id_stream = u64::from(crc32fast::hash(id.as_bytes()));
    while !STOP.load(Ordering::SeqCst) && args.games.is_none_or(|limit| played < limit) {
        let published = wait_for(&exchange, args.retries, "a published network", |x| {
            x.published()
        })?;
        if network
            .as_ref()
            .is_none_or(|(v, _)| *v != published.version)
        {
            // A torn read fails the checksum and is read again.
            let net = with_retry("reading the published network", args.retries, || {
                let bytes = exchange.read_network(&published)?;
                Network::from_bytes(&bytes, Some(cfg.net), &device, &published.network)
            })?;
            info!(
                "worker {id}: playing with network version {}",
                published.version
            );
            network = Some((published.version, net));
        }
        let Some((version, net)) = &network else {
            continue;
        };
        let games = args
            .games
            .map_or(shard_games, |limit| shard_games.min(limit - played));
        let mut settings = cfg.selfplay.clone();
        settings.games = games;
        if let Some(g) = args.games_in_flight {
            settings.games_in_flight = Some(g.max(1));
        }
        let seed = derive_seed(cfg.seed ^ id_stream, seq, STREAM_WORKER);
        let stage = settings.stage(gpu, version + 1, seed, None);
        let name = shard_name(&id, seq);
        let shard = scratch.join(format!("{name}.shard"));
        let pgn = scratch.join(format!("{name}.pgn"));
        *UNFINISHED.lock().unwrap_or_else(|e| e.into_inner()) = vec![scratch.clone()];
        let start = Instant::now();
        let out = stage.run(net, precision, &shard, &pgn, &mut Quiet)?;
        let shard_bytes =
            std::fs::read(&shard).with_context(|| format!("reading {}", shard.display()))?;
        let pgn_bytes =
            std::fs::read(&pgn).with_context(|| format!("reading {}", pgn.display()))?;
        let meta = ShardMeta {
            worker: id.clone(),
            seq,
            network_version: *version,
            tally: out.stats.tally.clone(),
            positions: out.stats.positions,
            samples: out.samples.len(),
            evaluations: out.stats.evaluations,
            wall_s: start.elapsed().as_secs_f64(),
            ..Default::default()
        };
        with_retry("storing a shard", args.retries, || {
            exchange.put_shard(&meta, &shard_bytes, &pgn_bytes)
        })?;
        UNFINISHED.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let _ = std::fs::remove_file(&shard);
        let _ = std::fs::remove_file(&pgn);
        info!(
            "worker {id}: shard {name}: {} games, {} samples with network version {version}, {:.0} positions/s",
            meta.tally.games,
            meta.samples,
            meta.positions as f64 / meta.wall_s.max(1e-9)
        );
        played += games;
        seq += 1;
    }
    info!("worker {id}: stopped after {played} games");
    Ok(())
}

/// `HOST.PID`, with anything but letters, digits, `_` and `.` in the host name as `_`.
fn default_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into());
    let host: String = host
        .trim()
        .chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let host = host.trim_start_matches('.');
    format!(
        "{}.{}",
        if host.is_empty() { "worker" } else { host },
        std::process::id()
    )
}

/// Waits until `get` finds something (retrying storage errors), or the worker is stopped.
fn wait_for<T>(
    exchange: &Exchange,
    retries: u32,
    what: &str,
    mut get: impl FnMut(&Exchange) -> Result<Option<T>>,
) -> Result<T> {
    let mut announced = false;
    loop {
        if let Some(v) = with_retry(&format!("reading {what}"), retries, || get(exchange))? {
            return Ok(v);
        }
        if !announced {
            info!(
                "waiting for {what} in {} (start `trainer learn --run-dir` there)",
                exchange.describe()
            );
            announced = true;
        }
        std::thread::sleep(WAIT_POLL);
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT set [`STOP`]; a watcher thread then removes the unfinished shard's
/// files and ends the process.
fn stop_on_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    let handler: extern "C" fn(libc::c_int) = on_signal;
    unsafe {
        libc::signal(libc::SIGTERM, handler as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
    }
    std::thread::spawn(|| loop {
        if STOP.load(Ordering::SeqCst) {
            let scratch = UNFINISHED.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for dir in &scratch {
                if std::fs::remove_dir_all(dir).is_ok() {
                    info!(
                        "stopped: discarded the unfinished shard in {}",
                        dir.display()
                    );
                }
            }
            info!("stopped by a signal");
            log::logger().flush();
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    });
}
