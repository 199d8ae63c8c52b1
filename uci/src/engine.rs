//! The input side of the engine: the current game and options, and the dispatch of each
//! command. Searches (and `bench`) run on a worker thread that owns the [`Core`] while it
//! works; this thread keeps answering (`isready`, `stop`, `ponderhit`, `position`,
//! `setoption`) and never waits on a search except where the protocol says the old search
//! ends (`go`, `ucinewgame`, `bench`, `quit` stop it first).
//!
//! Every rejected input (illegal move, bad FEN, unknown or bad option, a network that
//! does not load) prints `info string error: ...` and leaves the previous state as it was.

use crate::extras;
use crate::input::{Command, GoCommand, PositionCommand, PositionStart};
use crate::network::{self, LoadedNet};
use crate::options::{Changed, Options};
use crate::output::emit;
use crate::searcher::{self, Control, Core, Job};
use anyhow::{Context, Result};
use ember_engine::game::{play_uci_moves, position_from_fen_in};
use ember_engine::Game;
use shakmaty::CastlingMode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Who holds the core: this thread, or a worker until it finishes.
enum Worker {
    Idle(Box<Core>),
    Busy {
        handle: JoinHandle<Box<Core>>,
        control: Arc<Control>,
    },
    /// Only while a worker that panicked is being replaced.
    Empty,
}

pub struct Engine {
    options: Options,
    game: Game,
    slot: Worker,
    /// A network loaded by `setoption` while a search held the core.
    pending_net: Option<LoadedNet>,
    /// `NNCacheSize` changed: the next search starts with a fresh cache.
    cache_changed: bool,
    /// What start-up found (the network played with, and why the default file was not
    /// used if it was not), said as `info string` in every answer to `uci`, where a GUI
    /// shows it; stderr alone is not seen.
    startup: Vec<String>,
}

/// What the input loop does after a command.
#[derive(PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

impl Engine {
    /// Loads the default network (`models/latest.safetensors` if present, else the
    /// embedded one; the embedded one too if the file does not load).
    pub fn new() -> Result<Engine> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let weights = network::default_weights();
        let mut options = Options::new(weights, cpus, false);
        let mut startup = Vec::new();
        let net = match network::load(&options.weights_file, options.device, options.threads) {
            Ok(net) => net,
            Err(e) => {
                let line = format!("info string error: {e:#}; playing with the embedded network");
                log::warn!("{line}");
                startup.push(line);
                options.weights_file = crate::options::EMBEDDED.to_string();
                network::load(&options.weights_file, options.device, options.threads)?
            }
        };
        startup.push(format!("info string network {}", net.description));
        if net.on_gpu {
            options = Options {
                minibatch_size: 256,
                ..options
            };
        }
        log::info!("network {}", net.description);
        Ok(Engine {
            options,
            game: Game::new(),
            slot: Worker::Idle(Box::new(Core::new(net))),
            pending_net: None,
            cache_changed: false,
            startup,
        })
    }

    pub fn handle(&mut self, command: Command) -> Flow {
        match command {
            Command::Empty | Command::Debug(_) | Command::Register => {}
            Command::Uci => {
                emit(&format!("id name Ember {}", env!("CARGO_PKG_VERSION")));
                emit("id author the Ember developers");
                for line in self.options.declarations() {
                    emit(&line);
                }
                for line in &self.startup {
                    emit(line);
                }
                emit("uciok");
            }
            Command::IsReady => {
                self.reap();
                emit("readyok");
            }
            Command::UciNewGame => {
                self.finish_search();
                if let Some(core) = self.core() {
                    core.clear();
                }
                self.game = Game::new();
            }
            Command::Position(p) => match build_game(&p, self.options.castling_mode()) {
                Ok(game) => self.game = game,
                Err(e) => emit(&format!("info string error: {e:#}; position unchanged")),
            },
            Command::Go(go) => self.go(go),
            Command::Stop => {
                if let Worker::Busy { control, .. } = &self.slot {
                    control.stop.store(true, Ordering::Release);
                }
            }
            Command::PonderHit => {
                if let Worker::Busy { control, .. } = &self.slot {
                    control.ponderhit.store(true, Ordering::Release);
                }
            }
            Command::SetOption { name, value } => self.set_option(&name, value.as_deref()),
            Command::Display => {
                for line in extras::display(&self.game) {
                    emit(&line);
                }
            }
            Command::Eval => {
                self.reap();
                let game = self.game.clone();
                let castling = self.options.castling_mode();
                match self.core() {
                    Some(core) => match extras::eval(core, &game, castling) {
                        Ok(lines) => lines.iter().for_each(|l| emit(l)),
                        Err(e) => emit(&format!("info string error: eval failed: {e:#}")),
                    },
                    None => emit("info string error: eval is not available while a search runs; send stop first"),
                }
            }
            Command::Bench(nodes) => self.bench(nodes.unwrap_or(extras::BENCH_NODES)),
            Command::Quit => {
                self.finish_search();
                return Flow::Quit;
            }
            Command::Invalid(why) => emit(&format!("info string error: {why}")),
        }
        Flow::Continue
    }

    /// Takes the core back from a worker that has finished.
    fn reap(&mut self) {
        if matches!(&self.slot, Worker::Busy { handle, .. } if handle.is_finished()) {
            self.join();
        }
    }

    /// Stops a running search (its `bestmove` is printed) and takes the core back.
    pub fn finish_search(&mut self) {
        if let Worker::Busy { control, .. } = &self.slot {
            control.stop.store(true, Ordering::Release);
            self.join();
        }
    }

    fn join(&mut self) {
        let Worker::Busy { handle, .. } = std::mem::replace(&mut self.slot, Worker::Empty) else {
            return;
        };
        match handle.join() {
            Ok(core) => self.slot = Worker::Idle(core),
            Err(_) => {
                emit("info string error: the search thread failed; reloading the network");
                match network::load(
                    &self.options.weights_file,
                    self.options.device,
                    self.options.threads,
                )
                .or_else(|_| {
                    network::load(crate::options::EMBEDDED, ember_engine::DeviceChoice::Cpu, 1)
                }) {
                    Ok(net) => self.slot = Worker::Idle(Box::new(Core::new(net))),
                    Err(e) => emit(&format!(
                        "info string error: no network could be loaded: {e:#}"
                    )),
                }
            }
        }
    }

    /// The core when no search holds it, with pending option changes applied.
    fn core(&mut self) -> Option<&mut Core> {
        let Worker::Idle(core) = &mut self.slot else {
            return None;
        };
        if let Some(net) = self.pending_net.take() {
            core.net = net;
            core.clear();
        }
        if self.cache_changed {
            core.clear();
            self.cache_changed = false;
        }
        core.net
            .evaluator
            .inner_mut()
            .set_threads(self.options.threads);
        Some(core)
    }

    fn go(&mut self, go: GoCommand) {
        self.finish_search();
        let job = Job {
            game: self.game.clone(),
            go,
            options: self.options.clone(),
        };
        self.spawn(move |core, control| searcher::run(core, &job, control));
    }

    fn bench(&mut self, nodes: u64) {
        self.finish_search();
        let options = self.options.clone();
        self.spawn(move |core, control| {
            if let Err(e) = extras::bench(core, &options, nodes, control) {
                emit(&format!("info string error: bench failed: {e:#}"));
            }
        });
    }

    /// Hands the core to a worker thread running `work`.
    fn spawn(&mut self, work: impl FnOnce(&mut Core, &Control) + Send + 'static) {
        if self.core().is_none() {
            emit("info string error: no network is loaded");
            return;
        }
        let Worker::Idle(mut core) = std::mem::replace(&mut self.slot, Worker::Empty) else {
            unreachable!("core() checked the slot");
        };
        let control = Arc::new(Control::default());
        let worker_control = Arc::clone(&control);
        let spawned = std::thread::Builder::new()
            .name("search".into())
            .spawn(move || {
                work(&mut core, &worker_control);
                core
            });
        match spawned {
            Ok(handle) => self.slot = Worker::Busy { handle, control },
            Err(e) => emit(&format!(
                "info string error: cannot start the search thread: {e}"
            )),
        }
    }

    fn set_option(&mut self, name: &str, value: Option<&str>) {
        let mut next = self.options.clone();
        let changed = match next.set(name, value) {
            Ok(c) => c,
            Err(e) => {
                emit(&format!("info string error: {e:#}"));
                return;
            }
        };
        if changed == Changed::Network {
            match network::load(&next.weights_file, next.device, next.threads) {
                Ok(net) => {
                    emit(&format!("info string loaded network {}", net.description));
                    self.pending_net = Some(net);
                }
                Err(e) => {
                    emit(&format!(
                        "info string error: {e:#}; keeping the current network"
                    ));
                    return;
                }
            }
        }
        if changed == Changed::Log {
            if let Err(e) = crate::output::set_log_file(&next.log_file) {
                emit(&format!(
                    "info string error: cannot open the log file {:?}: {e}; the log stays as it was",
                    next.log_file
                ));
                return;
            }
        }
        if changed == Changed::Cache {
            self.cache_changed = true;
        }
        self.options = next;
        self.reap();
        let _ = self.core();
    }
}

/// The game a `position` command describes, or why it is not one. `mode` says how the
/// FEN's castling rights are read (`UCI_Chess960`); moves are read in either notation.
fn build_game(p: &PositionCommand, mode: CastlingMode) -> Result<Game> {
    let mut game = match &p.start {
        PositionStart::StartPos => Game::new(),
        PositionStart::Fen(fen) => match position_from_fen_in(fen, mode) {
            Ok(position) => Game::from_position(position),
            Err(e)
                if mode == CastlingMode::Standard
                    && position_from_fen_in(fen, CastlingMode::Chess960).is_ok() =>
            {
                return Err(e.context(
                    "a Chess960 position (setoption name UCI_Chess960 value true reads it)",
                ));
            }
            Err(e) => return Err(e),
        },
    };
    let moves: Vec<&str> = p.moves.iter().map(String::as_str).collect();
    play_uci_moves(&mut game, &moves).context("in position ... moves")?;
    Ok(game)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_line;
    use shakmaty::Position;

    /// Fuzzing of what a GUI sends: arbitrary bytes and mutated real lines go through
    /// the line decoder and parser, `position` commands are built into games, and
    /// `setoption` lines are applied, without a panic (512 cases unless `PROPTEST_CASES`).
    mod fuzz {
        use super::*;
        use crate::input::sanitize;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            let mut c = ProptestConfig::default();
            if std::env::var_os("PROPTEST_CASES").is_none() {
                c.cases = 512;
            }
            c
        }

        const LINES: &[&str] = &[
            "position startpos moves e2e4 e7e5 g1f3 b8c6 f1b5",
            "position fen r1bqkb1r/pppp1ppp/2n2n2/4p3/2B1P3/5N2/PPPP1PPP/RNBQK2R w KQkq - 4 4 moves e1g1",
            "position fen 8/P7/8/8/8/8/8/k6K w - - 0 1 moves a7a8q",
            "go wtime 1000 btime 1000 winc 10 binc 10 movestogo 20 searchmoves e2e4 d2d4",
            "setoption name RamLimitMb value 64",
            "setoption name WeightsFile value /dev/zero",
            "go nodes 100 depth 5 mate 3 movetime 10 infinite ponder",
        ];

        fn line() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..160),
                (
                    prop::sample::select(LINES),
                    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
                    any::<prop::sample::Index>(),
                )
                    .prop_map(|(l, edits, cut)| {
                        let mut b = l.as_bytes().to_vec();
                        for (at, byte) in edits {
                            let i = at.index(b.len());
                            b[i] = byte;
                        }
                        b.truncate(cut.index(b.len() + 1).max(b.len() / 2));
                        b
                    }),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_line_parses_and_a_position_is_built_or_refused(raw in line()) {
                let text = sanitize(&raw);
                prop_assert!(!text.contains('\n') && !text.contains('\r'));
                match parse_line(&text) {
                    Command::Position(p) => {
                        for mode in [CastlingMode::Standard, CastlingMode::Chess960] {
                            if let Ok(game) = build_game(&p, mode) {
                                let fen = ember_engine::game::fen_of(game.position());
                                let again = position_from_fen_in(&fen, mode);
                                prop_assert!(again.is_ok(), "{}", fen);
                            }
                        }
                    }
                    Command::SetOption { name, value } => {
                        let mut o = Options::new(crate::options::EMBEDDED.to_string(), 2, false);
                        let before = o.clone();
                        if o.set(&name, value.as_deref()).is_err() {
                            prop_assert_eq!(o, before);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn game_of(line: &str) -> Result<Game> {
        match parse_line(line) {
            Command::Position(p) => build_game(&p, CastlingMode::Standard),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn position_with_moves_plays_them() {
        let g = game_of("position startpos moves e2e4 e7e5 g1f3").unwrap();
        assert_eq!(g.ply(), 3);
    }

    #[test]
    fn position_with_an_illegal_move_is_an_error() {
        assert!(game_of("position startpos moves e2e5").is_err());
        assert!(game_of("position startpos moves e2e4 e7e5 e1g1").is_err());
        assert!(game_of("position fen 8/P5k1/8/8/8/8/8/4K3 w - - 0 1 moves a7a8k").is_err());
    }

    #[test]
    fn bad_fens_are_errors() {
        for fen in [
            "garbage",
            "rnbqkbnr/pppppppp/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
            "4k3/8/8/8/8/8/8/3KK3 w - - 0 1",
            "8/8/8/8/8/8/8/8 w - - 0 1",
            "4k3/4R3/8/8/8/8/8/4K3 w - - 0 1",
            "rnbqkbnr/ppppXppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
        ] {
            assert!(game_of(&format!("position fen {fen}")).is_err(), "{fen}");
        }
    }

    #[test]
    fn weights_file_embedded_loads_and_a_missing_file_keeps_the_old_network() {
        let mut engine = Engine::new().unwrap();
        engine.handle(Command::SetOption {
            name: "WeightsFile".into(),
            value: Some("/nonexistent/x.safetensors".into()),
        });
        assert_ne!(engine.options.weights_file, "/nonexistent/x.safetensors");
        engine.handle(Command::SetOption {
            name: "WeightsFile".into(),
            value: Some(crate::options::EMBEDDED.into()),
        });
        assert_eq!(engine.options.weights_file, crate::options::EMBEDDED);
        assert!(
            engine.pending_net.is_none(),
            "the new network is installed at once when idle"
        );
    }

    #[test]
    fn rejected_position_keeps_the_previous_game() {
        let mut engine = Engine::new().unwrap();
        engine.handle(parse_line("position startpos moves e2e4"));
        engine.handle(parse_line("position startpos moves d2d4 d7d5 e2e5"));
        engine.handle(parse_line("position fen garbage"));
        assert_eq!(engine.game.ply(), 1);
        assert_eq!(
            ember_engine::game::move_to_uci(engine.game.moves()[0]),
            "e2e4"
        );
    }

    /// From a game of Chess960 (X-FEN): White may castle short (the king stays on g1,
    /// the rook goes to f1) or long (g1e1: the king to c1, the rook to d1).
    const CHESS960: &str = "qnbnr1kr/1p3ppp/B1pbp3/p2p2B1/3PP3/2N5/PPP2PPP/QN2R1KR w KQkq - 2 6";

    fn engine_with(lines: &[&str]) -> Engine {
        let mut engine = Engine::new().unwrap();
        for line in lines {
            engine.handle(parse_line(line));
        }
        engine
    }

    #[test]
    fn a_chess960_position_needs_uci_chess960() {
        let standard = engine_with(&[&format!("position fen {CHESS960} moves g1h1")]);
        assert_eq!(
            standard.game.ply(),
            0,
            "refused: the game is the start position"
        );
        assert_eq!(
            standard.game.position().board(),
            Game::new().position().board()
        );
        let err = game_of(&format!("position fen {CHESS960}")).unwrap_err();
        assert!(format!("{err:#}").contains("UCI_Chess960"), "{err:#}");
        let chess960 = engine_with(&[
            "setoption name UCI_Chess960 value true",
            &format!("position fen {CHESS960} moves g1h1"),
        ]);
        assert_eq!(chess960.game.ply(), 1);
        assert!(chess960.game.moves()[0].is_castle());
    }

    #[test]
    fn chess960_castling_is_read_in_both_notations_and_written_as_king_takes_rook() {
        let mode = CastlingMode::Chess960;
        for (line, written) in [
            (format!("position fen {CHESS960} moves g1h1"), "g1h1"),
            (format!("position fen {CHESS960} moves g1e1"), "g1e1"),
            // King and rooks on their standard squares: e1g1 is castling too.
            (
                "position fen r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1 moves e1g1".to_string(),
                "e1h1",
            ),
            (
                "position fen r3k2r/8/8/8/8/8/8/R3K2R w HAha - 0 1 moves e1h1".to_string(),
                "e1h1",
            ),
        ] {
            let Command::Position(p) = parse_line(&line) else {
                panic!("{line}")
            };
            let game = build_game(&p, mode).unwrap();
            let castle = game.moves()[0];
            assert!(castle.is_castle(), "{line}");
            assert_eq!(ember_engine::game::move_to_uci_in(castle, mode), written);
        }
        let g = game_of("position fen r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1 moves e1h1").unwrap();
        assert_eq!(ember_engine::game::move_to_uci(g.moves()[0]), "e1g1");
    }

    #[test]
    fn castling_rights_vampirc_cannot_read_are_accepted() {
        // Shredder-style castling letters name the rooks' files.
        let g = game_of("position fen rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w HAha - 0 1")
            .unwrap();
        assert_eq!(g.position().legal_moves().len(), 20);
    }
}
