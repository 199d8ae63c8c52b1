//! Players for matches against fixed opponents: Ember with a checkpoint (`ember:PATH`,
//! `ember:embedded`), any external UCI engine (`uci:COMMAND;NAME=VALUE;...`), a uniform
//! random mover (`random`), a one-ply material-greedy player (`greedy`), and a material
//! alpha-beta searcher to D plies with a capture search (`minimax:D`, [`crate::minimax`]).
//!
//! A player answers one question: the move to play in a game, within a [`MoveLimit`].
//! An external engine runs as a child process under a watchdog: one that exits, stops
//! answering, or answers with an illegal or malformed move fails the move with a
//! [`Failure`] naming why, and the match runner scores the game as lost and starts the
//! engine afresh for the next one.

use crate::game::{move_to_uci_in, parse_uci_move, piece_value, Game};
use crate::mcts::{CachedEvaluator, Driver, Limits, NetEvaluator, Search, SearchParams};
use crate::net::{Network, Precision};
use crate::phase_times::PhaseTimes;
use crate::timeman;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use rand::{rngs::StdRng, Rng, SeedableRng};
use shakmaty::{CastlingMode, Move, Position};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a move may take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MoveLimit {
    /// Search nodes (Ember: root visits; UCI: `go nodes N`). No clock.
    Nodes(u64),
    /// Milliseconds per move (`go movetime`).
    MoveTime(u64),
    /// A game clock: the mover's and the opponent's time left and their increments, in
    /// milliseconds (`go wtime btime winc binc`).
    Clock {
        own_ms: u64,
        own_inc_ms: u64,
        other_ms: u64,
        other_inc_ms: u64,
    },
}

/// Why a player did not produce a move.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The engine's process ended (or could not be written to).
    Crashed(String),
    /// No move within the watchdog's time.
    Hung(Duration),
    /// A move that is not legal in the position.
    Illegal(String),
    /// A line that is not `bestmove MOVE`.
    Malformed(String),
    /// Anything else (a network evaluation error).
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Crashed(why) => write!(f, "crashed ({why})"),
            Failure::Hung(d) => write!(f, "sent no move within {:.1}s", d.as_secs_f64()),
            Failure::Illegal(m) => write!(f, "played the illegal move {m}"),
            Failure::Malformed(line) => write!(f, "sent a malformed answer {line:?}"),
            Failure::Other(why) => write!(f, "failed ({why})"),
        }
    }
}

/// A player of games.
pub trait Player: Send {
    /// A name for PGN tags and tables.
    fn name(&self) -> String;
    /// A new game begins (engines clear their state).
    fn new_game(&mut self) -> Result<(), Failure>;
    /// The move to play in `game` (which has at least one legal move).
    fn choose(&mut self, game: &Game, limit: MoveLimit) -> Result<Move, Failure>;
}

/// A player as named on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum PlayerSpec {
    Random,
    Greedy,
    /// Material alpha-beta to this many plies, then captures.
    Minimax(u32),
    /// A checkpoint file, or `None` for the network built into the binary.
    Ember(Option<PathBuf>),
    /// A program with arguments, and `NAME=VALUE` options to set after `uci`.
    Uci {
        command: Vec<String>,
        options: Vec<(String, String)>,
    },
}

impl std::str::FromStr for PlayerSpec {
    type Err = String;
    /// `random`, `greedy`, `minimax:D`, `ember:PATH`, `ember:embedded`,
    /// `uci:COMMAND[;NAME=VALUE...]`, or a bare path to a checkpoint (`.safetensors`).
    fn from_str(s: &str) -> Result<PlayerSpec, String> {
        let s = s.trim();
        if s == "random" {
            return Ok(PlayerSpec::Random);
        }
        if s == "greedy" {
            return Ok(PlayerSpec::Greedy);
        }
        if let Some(depth) = s.strip_prefix("minimax:") {
            let max = crate::minimax::MAX_DEPTH;
            return match depth.trim().parse::<u32>() {
                Ok(d) if (1..=max).contains(&d) => Ok(PlayerSpec::Minimax(d)),
                _ => Err(format!("{s:?}: minimax:D needs a depth D from 1 to {max}")),
            };
        }
        if let Some(path) = s.strip_prefix("ember:") {
            return Ok(PlayerSpec::Ember(match path {
                "embedded" | "" => None,
                p => Some(PathBuf::from(p)),
            }));
        }
        if let Some(rest) = s.strip_prefix("uci:") {
            let mut parts = rest.split(';');
            let command: Vec<String> = parts
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
            if command.is_empty() {
                return Err(format!("{s:?}: uci: needs a command"));
            }
            let mut options = Vec::new();
            for opt in parts.filter(|p| !p.trim().is_empty()) {
                let (name, value) = opt
                    .split_once('=')
                    .ok_or_else(|| format!("{s:?}: option {opt:?} is not NAME=VALUE"))?;
                options.push((name.trim().to_string(), value.trim().to_string()));
            }
            return Ok(PlayerSpec::Uci { command, options });
        }
        if s.ends_with(".safetensors") {
            return Ok(PlayerSpec::Ember(Some(PathBuf::from(s))));
        }
        Err(format!(
            "unknown player {s:?}: expected random, greedy, minimax:D, ember:PATH, ember:embedded, \
uci:COMMAND[;NAME=VALUE...] or a .safetensors file"
        ))
    }
}

impl std::fmt::Display for PlayerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlayerSpec::Random => write!(f, "random"),
            PlayerSpec::Greedy => write!(f, "greedy"),
            PlayerSpec::Minimax(d) => write!(f, "minimax:{d}"),
            PlayerSpec::Ember(None) => write!(f, "ember:embedded"),
            PlayerSpec::Ember(Some(p)) => write!(f, "ember:{}", p.display()),
            PlayerSpec::Uci { command, options } => {
                write!(f, "uci:{}", command.join(" "))?;
                for (n, v) in options {
                    write!(f, ";{n}={v}")?;
                }
                Ok(())
            }
        }
    }
}

/// What building an Ember player needs beyond its spec.
#[derive(Clone)]
pub struct EmberSetup {
    /// The network built into the binary (`ember:embedded`), as checkpoint bytes.
    pub embedded: Option<&'static [u8]>,
    pub device: Device,
    pub precision: Precision,
    /// GEMM threads of one player's network (1 when several games run at once).
    pub threads: usize,
    /// [`SearchParams::solver`] of Ember's searches.
    pub solver: bool,
}

/// A loaded network shared by all the players built from one spec.
pub struct Prepared {
    spec: PlayerSpec,
    network: Option<Arc<Network>>,
    label: String,
}

impl Prepared {
    /// Loads what `spec` needs once (a checkpoint is read and checked here, so a bad file
    /// is an error before any game).
    pub fn new(spec: PlayerSpec, setup: &EmberSetup) -> Result<Prepared> {
        let (network, label) = match &spec {
            PlayerSpec::Ember(Some(path)) => {
                let net = Network::load(path, None, &setup.device)?;
                let stem = path.file_stem().map_or_else(
                    || path.display().to_string(),
                    |s| s.to_string_lossy().into_owned(),
                );
                let label = format!("ember {stem} ({}, iteration {})", net.config, net.iteration);
                (Some(Arc::new(net)), label)
            }
            PlayerSpec::Ember(None) => {
                let bytes = setup
                    .embedded
                    .ok_or_else(|| anyhow!("no network is built into this program"))?;
                let net = Network::from_bytes(bytes, None, &setup.device, "the embedded network")?;
                let label = format!("ember embedded ({})", net.config);
                (Some(Arc::new(net)), label)
            }
            PlayerSpec::Uci { command, options } => {
                let program = Path::new(&command[0])
                    .file_name()
                    .map_or(command[0].clone(), |n| n.to_string_lossy().into_owned());
                let mut label = std::iter::once(program)
                    .chain(command[1..].iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ");
                if !options.is_empty() {
                    let opts: Vec<String> =
                        options.iter().map(|(n, v)| format!("{n}={v}")).collect();
                    label.push_str(&format!(" ({})", opts.join(", ")));
                }
                (None, label)
            }
            other => (None, other.to_string()),
        };
        Ok(Prepared {
            spec,
            network,
            label,
        })
    }

    /// An Ember player with a network already in memory.
    pub fn from_network(network: Arc<Network>, label: String) -> Prepared {
        Prepared {
            spec: PlayerSpec::Ember(None),
            network: Some(network),
            label,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn spec(&self) -> &PlayerSpec {
        &self.spec
    }

    /// The network of an Ember player.
    pub fn network(&self) -> Option<&Network> {
        self.network.as_deref()
    }

    /// A player for one worker of a match, its random choices seeded with `seed`.
    pub fn player(&self, setup: &EmberSetup, seed: u64) -> Result<Box<dyn Player>> {
        Ok(match &self.spec {
            PlayerSpec::Random => Box::new(RandomPlayer {
                rng: StdRng::seed_from_u64(seed),
            }),
            PlayerSpec::Greedy => Box::new(GreedyPlayer {
                rng: StdRng::seed_from_u64(seed),
            }),
            &PlayerSpec::Minimax(depth) => Box::new(MinimaxPlayer {
                depth,
                rng: StdRng::seed_from_u64(seed),
            }),
            PlayerSpec::Ember(_) => {
                let net = self.network.as_ref().expect("ember players hold a network");
                let mut evaluator = NetEvaluator::new(net, setup.precision)?;
                evaluator.set_threads(setup.threads);
                let params = SearchParams {
                    max_batch: EMBER_BATCH,
                    solver: setup.solver,
                    ..SearchParams::default()
                };
                Box::new(EmberPlayer {
                    label: self.label.clone(),
                    evaluator: CachedEvaluator::new(evaluator, params.cache_entries),
                    params,
                    search: None,
                })
            }
            PlayerSpec::Uci { command, options } => Box::new(
                UciPlayer::start(command, options)
                    .with_context(|| format!("starting {}", command.join(" ")))?,
            ),
        })
    }
}

/// A uniformly random legal move.
pub struct RandomPlayer {
    rng: StdRng,
}

impl RandomPlayer {
    pub fn new(seed: u64) -> RandomPlayer {
        RandomPlayer {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl Player for RandomPlayer {
    fn name(&self) -> String {
        "random".into()
    }
    fn new_game(&mut self) -> Result<(), Failure> {
        Ok(())
    }
    fn choose(&mut self, game: &Game, _: MoveLimit) -> Result<Move, Failure> {
        let moves = game.position().legal_moves();
        Ok(moves[self.rng.random_range(0..moves.len())])
    }
}

/// Takes the most valuable piece it can capture (pawn 1, knight and bishop 3, rook 5,
/// queen 9; ties broken at random), otherwise plays a random move.
pub struct GreedyPlayer {
    rng: StdRng,
}

impl Player for GreedyPlayer {
    fn name(&self) -> String {
        "greedy".into()
    }
    fn new_game(&mut self) -> Result<(), Failure> {
        Ok(())
    }
    fn choose(&mut self, game: &Game, _: MoveLimit) -> Result<Move, Failure> {
        let moves = game.position().legal_moves();
        let value = |m: &Move| m.capture().map_or(0, piece_value);
        let best = moves.iter().map(value).max().unwrap_or(0);
        let pool: Vec<&Move> = moves.iter().filter(|m| value(m) == best).collect();
        Ok(*pool[self.rng.random_range(0..pool.len())])
    }
}

/// Material alpha-beta to `depth` plies with a capture search ([`crate::minimax`]).
pub struct MinimaxPlayer {
    depth: u32,
    rng: StdRng,
}

impl Player for MinimaxPlayer {
    fn name(&self) -> String {
        format!("minimax:{}", self.depth)
    }
    fn new_game(&mut self) -> Result<(), Failure> {
        Ok(())
    }
    fn choose(&mut self, game: &Game, _: MoveLimit) -> Result<Move, Failure> {
        crate::minimax::Minimax::default()
            .best_move(game.position(), self.depth, &mut self.rng)
            .map(|(m, _)| m)
            .ok_or_else(|| Failure::Other("no legal move".into()))
    }
}

/// Ember: a search with a network, its tree kept from move to move within a game.
pub struct EmberPlayer {
    label: String,
    /// The network behind the player's own evaluation cache.
    evaluator: CachedEvaluator<NetEvaluator>,
    params: SearchParams,
    search: Option<Search>,
}

/// Leaves per network call of an Ember player's search; under a clock or a move time it
/// searches batch after batch until the time is spent.
const EMBER_BATCH: usize = 32;

impl EmberPlayer {
    /// The search limits of `limit`: nodes as playouts, a move time or a clock through
    /// the time manager `ember` uses in a GUI (with its default move overhead).
    fn limits(limit: MoveLimit) -> Limits {
        let overhead = timeman::DEFAULT_MOVE_OVERHEAD;
        match limit {
            MoveLimit::Nodes(n) => Limits::playouts(n.max(1)),
            MoveLimit::MoveTime(ms) => {
                Limits::time(timeman::for_movetime(Duration::from_millis(ms), overhead))
            }
            MoveLimit::Clock {
                own_ms, own_inc_ms, ..
            } => Limits::time(timeman::for_clock(
                timeman::Clock {
                    remaining: Duration::from_millis(own_ms),
                    increment: Duration::from_millis(own_inc_ms),
                    moves_to_go: None,
                },
                overhead,
            )),
        }
    }
}

impl Player for EmberPlayer {
    fn name(&self) -> String {
        self.label.clone()
    }
    fn new_game(&mut self) -> Result<(), Failure> {
        self.search = None;
        self.evaluator.clear_cache();
        Ok(())
    }
    fn choose(&mut self, game: &Game, limit: MoveLimit) -> Result<Move, Failure> {
        let search = match &mut self.search {
            Some(s) => {
                s.advance_to(game);
                s
            }
            None => self.search.insert(Search::new(game, self.params.clone())),
        };
        Driver::new(search, Self::limits(limit))
            .run(
                search,
                &mut self.evaluator,
                &mut PhaseTimes::default(),
                &mut (),
            )
            .map_err(|e| Failure::Other(format!("{e:#}")))?;
        search
            .best_move()
            .or_else(|| game.position().legal_moves().first().copied())
            .ok_or_else(|| Failure::Other("no legal move".into()))
    }
}

/// How long an engine may take to answer `uci` and `isready`.
const HANDSHAKE: Duration = Duration::from_secs(20);
/// How long past its limit an engine may take before it is declared hung.
const GRACE: Duration = Duration::from_secs(5);
/// How long a `go nodes` search may take.
const NODES_WATCHDOG: Duration = Duration::from_secs(60);

/// An external UCI engine as a child process; lines from its stdout arrive on a channel
/// fed by a reader thread, so every wait has a timeout.
pub struct UciPlayer {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// What the engine was last told with `UCI_Chess960` (false until then).
    chess960: bool,
}

impl UciPlayer {
    /// Starts `command`, does the `uci` handshake, sets `options` and waits for `readyok`.
    pub fn start(command: &[String], options: &[(String, String)]) -> Result<UciPlayer> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| anyhow!("an empty engine command"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("running {program}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut player = UciPlayer {
            name: command.join(" "),
            child,
            stdin,
            lines,
            chess960: false,
        };
        player.send("uci").map_err(|f| anyhow!("{f}"))?;
        let mut name = None;
        player
            .wait_for(HANDSHAKE, |l| {
                if let Some(n) = l.strip_prefix("id name ") {
                    name = Some(n.trim().to_string());
                }
                l.trim() == "uciok"
            })
            .map_err(|f| anyhow!("no uciok: {f}"))?;
        if let Some(n) = name {
            player.name = n;
        }
        for (n, v) in options {
            player
                .send(&format!("setoption name {n} value {v}"))
                .map_err(|f| anyhow!("{f}"))?;
        }
        player.ready().map_err(|f| anyhow!("no readyok: {f}"))?;
        Ok(player)
    }

    fn send(&mut self, line: &str) -> Result<(), Failure> {
        writeln!(self.stdin, "{line}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| Failure::Crashed(format!("writing to it failed: {e}")))
    }

    /// Reads lines until `done` accepts one; the line accepted is returned.
    fn wait_for(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> Result<String, Failure> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if done(&line) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Err(Failure::Hung(limit)),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self
                        .child
                        .try_wait()
                        .ok()
                        .flatten()
                        .map_or("its output closed".to_string(), |s| {
                            format!("exited with {s}")
                        });
                    return Err(Failure::Crashed(status));
                }
            }
        }
    }

    fn ready(&mut self) -> Result<(), Failure> {
        self.send("isready")?;
        self.wait_for(HANDSHAKE, |l| l.trim() == "readyok")
            .map(|_| ())
    }
}

impl Drop for UciPlayer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Player for UciPlayer {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn new_game(&mut self) -> Result<(), Failure> {
        self.send("ucinewgame")?;
        self.ready()
    }

    fn choose(&mut self, game: &Game, limit: MoveLimit) -> Result<Move, Failure> {
        // A Chess960 game tells the engine so before its first position, and writes
        // castling as the king taking its rook.
        let mode = game.castling_mode();
        let chess960 = mode == CastlingMode::Chess960;
        if chess960 != self.chess960 {
            self.send(&format!("setoption name UCI_Chess960 value {chess960}"))?;
            self.ready()?;
            self.chess960 = chess960;
        }
        let mut position = format!(
            "position fen {}",
            crate::game::fen_of(game.start_position())
        );
        if !game.moves().is_empty() {
            position.push_str(" moves");
            for &m in game.moves() {
                position.push(' ');
                position.push_str(&move_to_uci_in(m, mode));
            }
        }
        self.send(&position)?;
        let white = game.position().turn() == shakmaty::Color::White;
        let (go, watchdog) = match limit {
            MoveLimit::Nodes(n) => (format!("go nodes {n}"), NODES_WATCHDOG),
            MoveLimit::MoveTime(ms) => (
                format!("go movetime {ms}"),
                Duration::from_millis(ms) + GRACE,
            ),
            MoveLimit::Clock {
                own_ms,
                own_inc_ms,
                other_ms,
                other_inc_ms,
            } => {
                let (wt, bt, wi, bi) = if white {
                    (own_ms, other_ms, own_inc_ms, other_inc_ms)
                } else {
                    (other_ms, own_ms, other_inc_ms, own_inc_ms)
                };
                (
                    format!("go wtime {wt} btime {bt} winc {wi} binc {bi}"),
                    Duration::from_millis(own_ms) + GRACE,
                )
            }
        };
        self.send(&go)?;
        let line = self.wait_for(watchdog, |l| l.starts_with("bestmove"))?;
        let text = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| Failure::Malformed(line.clone()))?;
        if !text.chars().all(|c| c.is_ascii_alphanumeric()) || !(4..=5).contains(&text.len()) {
            return Err(Failure::Malformed(line.clone()));
        }
        parse_uci_move(game.position(), text).map_err(|_| Failure::Illegal(text.to_string()))
    }
}

/// Checks a spec list for a gauntlet or match before anything starts.
pub fn parse_players(list: &str) -> Result<Vec<PlayerSpec>> {
    let specs: Vec<PlayerSpec> = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse().map_err(|e: String| anyhow!(e)))
        .collect::<Result<_>>()?;
    if specs.is_empty() {
        bail!("no players in {list:?}");
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::move_to_uci;

    /// An Ember player under a clock or a move time thinks as `ember` does in a GUI: the
    /// budget is timeman's, with ember's default move overhead.
    #[test]
    fn an_ember_player_under_a_clock_uses_the_engines_time_manager() {
        let clock = EmberPlayer::limits(MoveLimit::Clock {
            own_ms: 60_000,
            own_inc_ms: 500,
            other_ms: 1,
            other_inc_ms: 0,
        });
        let want = timeman::for_clock(
            timeman::Clock {
                remaining: Duration::from_secs(60),
                increment: Duration::from_millis(500),
                moves_to_go: None,
            },
            Duration::from_millis(50),
        );
        assert_eq!(clock, Limits::time(want));
        // Not the old rule (a fortieth of the clock plus three quarters of the increment).
        assert_ne!(want.target, Duration::from_millis(60_000 / 40 + 375));
        assert_eq!(
            EmberPlayer::limits(MoveLimit::MoveTime(300)),
            Limits::time(timeman::for_movetime(
                Duration::from_millis(300),
                Duration::from_millis(50)
            ))
        );
        assert_eq!(
            EmberPlayer::limits(MoveLimit::Nodes(64)),
            Limits::playouts(64)
        );
    }

    #[test]
    fn specs_parse_and_print_back() {
        for text in [
            "random",
            "greedy",
            "minimax:2",
            "ember:embedded",
            "ember:runs/a/best.safetensors",
            "uci:/usr/games/stockfish;Skill Level=0;Threads=1",
            "uci:python3 tests/fake.py",
        ] {
            let spec: PlayerSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            "x.safetensors".parse::<PlayerSpec>().unwrap(),
            PlayerSpec::Ember(Some("x.safetensors".into()))
        );
        assert!("stockfish".parse::<PlayerSpec>().is_err());
        assert!("uci:".parse::<PlayerSpec>().is_err());
        assert!("uci:sf;Skill".parse::<PlayerSpec>().is_err());
        for bad in ["minimax:0", "minimax:", "minimax:x", "minimax:99"] {
            assert!(bad.parse::<PlayerSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn greedy_takes_the_most_valuable_piece() {
        // White can take the pawn on d5 (exd5) or the queen on g4 (Bxg4): it takes the queen.
        let game = Game::from_fen("4k3/8/8/3p4/4P1q1/5B2/8/4K3 w - - 0 1").unwrap();
        let mut p = GreedyPlayer {
            rng: StdRng::seed_from_u64(1),
        };
        for _ in 0..10 {
            let m = p.choose(&game, MoveLimit::Nodes(1)).unwrap();
            assert_eq!(move_to_uci(m), "f3g4");
        }
    }

    #[test]
    fn random_plays_every_legal_move_eventually() {
        let game = Game::new();
        let mut p = RandomPlayer {
            rng: StdRng::seed_from_u64(3),
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            seen.insert(move_to_uci(p.choose(&game, MoveLimit::Nodes(1)).unwrap()));
        }
        assert_eq!(seen.len(), 20);
    }
}
