//! Matches between any two [`players`](crate::players): openings played in pairs (each
//! with both colours), several games at once, clocks enforced, external engines that
//! fail a move scored as losing that game, and the score reported as W/D/L, Elo with 95%
//! intervals from games and from pairs, LOS, and optionally an SPRT that stops the match
//! at either bound (see [`crate::stats`]).

use crate::game::{Game, Termination};
use crate::mcts::{NetEvaluator, SearchParams};
use crate::players::{EmberSetup, Prepared};
use crate::runner::{
    self, Contest, GameTally, PlayerSide, Rules, Schedule, SearchSide, Side, StartPlayer,
};
use crate::stats::{Pentanomial, Sprt, SprtVerdict, Trinomial};
use anyhow::{anyhow, bail, Context, Result};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

pub use crate::runner::{Limit, Opening};
pub use shakmaty::CastlingMode;

/// The opening book kept in the repository: 120 positions a few plies deep, each within
/// 50 centipawns at Stockfish depth 12 (`scripts/make-openings` made it).
pub const DEFAULT_BOOK: &str = include_str!("../../data/openings/ember-120.epd");

/// The Chess960 start positions kept in the repository (20 of the 960, spread over the
/// pieces' squares), the book of `--chess960` matches.
pub const CHESS960_BOOK: &str = include_str!("../../data/openings/chess960-20.epd");

/// Openings of standard chess from EPD text (one position a line, `#` comments) or PGN
/// text (each game's moves from its start position).
pub fn parse_openings(text: &str, origin: &str) -> Result<Vec<Opening>> {
    parse_openings_in(text, origin, CastlingMode::Standard)
}

/// [`parse_openings`] with castling rights read as `mode` says: Chess960 reads X-FEN and
/// Shredder-FEN rights of any rook. A PGN game tagged `[Variant "Chess960"]` is read as
/// Chess960 whatever `mode` is.
pub fn parse_openings_in(text: &str, origin: &str, mode: CastlingMode) -> Result<Vec<Opening>> {
    let looks_pgn = text.lines().any(|l| l.trim_start().starts_with('['));
    let openings = if looks_pgn {
        parse_pgn_openings(text, origin, mode)?
    } else {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 {
                bail!("{origin} line {}: not an EPD position: {line:?}", i + 1);
            }
            let fen = format!("{} 0 1", fields[..4].join(" "));
            Game::from_fen_in(&fen, mode).with_context(|| format!("{origin} line {}", i + 1))?;
            let name = line
                .split("id \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map_or_else(|| format!("{origin}:{}", i + 1), String::from);
            out.push(Opening {
                fen,
                name,
                castling: mode,
            });
        }
        out
    };
    if openings.is_empty() {
        bail!("{origin} holds no opening positions");
    }
    Ok(openings)
}

fn parse_pgn_openings(text: &str, origin: &str, mode: CastlingMode) -> Result<Vec<Opening>> {
    use shakmaty::san::San;
    let mut out = Vec::new();
    let mut fen: Option<String> = None;
    let mut chess960 = false;
    let mut movetext = String::new();
    let mut flush =
        |fen: &mut Option<String>, chess960: &mut bool, movetext: &mut String| -> Result<()> {
            if movetext.trim().is_empty() && fen.is_none() {
                return Ok(());
            }
            let castling = if std::mem::take(chess960) {
                CastlingMode::Chess960
            } else {
                mode
            };
            let mut game = match fen.take() {
                Some(f) => Game::from_fen_in(&f, castling)?,
                None => Game::new(),
            };
            let cleaned: String = {
                // Comments and variations carry no moves of the game.
                let mut depth = 0;
                movetext
                    .chars()
                    .filter(|&c| {
                        match c {
                            '{' | '(' => depth += 1,
                            '}' | ')' => depth -= 1,
                            _ => return depth == 0,
                        }
                        false
                    })
                    .collect()
            };
            for token in cleaned.split_whitespace() {
                if ["1-0", "0-1", "1/2-1/2", "*"].contains(&token) {
                    continue;
                }
                let token = token.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
                if token.is_empty() {
                    continue;
                }
                let san: San = token
                    .parse()
                    .map_err(|_| anyhow!("{origin}: {token:?} is not a move"))?;
                let mv = san
                    .to_move(game.position())
                    .map_err(|_| anyhow!("{origin}: {token} is not legal"))?;
                game.play(mv);
            }
            out.push(Opening {
                fen: crate::game::fen_of(game.position()),
                name: format!("{origin} #{}", out.len() + 1),
                castling,
            });
            movetext.clear();
            Ok(())
        };
    let mut in_moves = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if in_moves {
                flush(&mut fen, &mut chess960, &mut movetext)?;
                in_moves = false;
            }
            if let Some(v) = t.strip_prefix("[FEN \"") {
                fen = Some(v.trim_end_matches("\"]").to_string());
            }
            if let Some(v) = t.strip_prefix("[Variant \"") {
                chess960 = v.trim_end_matches("\"]").eq_ignore_ascii_case("chess960");
            }
        } else if !t.is_empty() {
            in_moves = true;
            movetext.push(' ');
            movetext.push_str(t);
        }
    }
    flush(&mut fen, &mut chess960, &mut movetext)?;
    Ok(out)
}

/// Reads an opening file (`.epd` or `.pgn`), its castling rights read as `mode` says.
pub fn read_openings(path: &Path, mode: CastlingMode) -> Result<Vec<Opening>> {
    let text =
        crate::files::read_bounded_text(path, crate::files::MAX_BOOK_BYTES, "an opening book")
            .context("reading openings")?;
    parse_openings_in(&text, &path.display().to_string(), mode)
}

/// How a match is played.
#[derive(Clone, Debug)]
pub struct MatchSpec {
    /// Games (rounded up to even: an opening is played with both colours).
    pub games: usize,
    pub limit: Limit,
    pub openings: Vec<Opening>,
    /// Plies after which a game is adjudicated a draw.
    pub max_plies: u32,
    /// Uniformly random plies after each opening, the same for both games of a pair.
    pub random_opening_plies: u32,
    /// The search of Ember's sides (searched in rounds at a node limit, or alone under
    /// a clock); the solver is the setup's, as for every Ember player.
    pub search: SearchParams,
    /// Games played at once.
    pub concurrency: usize,
    pub sprt: Option<Sprt>,
    /// Seeds the random and greedy players and the order of openings.
    pub seed: u64,
}

/// One finished game.
#[derive(Clone, Debug)]
pub struct GameResult {
    /// Game number from 1; games `2k-1` and `2k` are pair `k` (one opening, both colours).
    pub number: usize,
    pub a_white: bool,
    /// A's score: 1, 0.5 or 0.
    pub score_a: f64,
    pub termination: Termination,
    /// Why the loser lost, for forfeits ("uci engine crashed (exited with ...)").
    pub reason: Option<String>,
    pub plies: usize,
    pub pgn: String,
}

/// The state of a match, after every game.
#[derive(Clone, Debug, Default)]
pub struct MatchReport {
    pub name_a: String,
    pub name_b: String,
    pub trinomial: Trinomial,
    pub pentanomial: Pentanomial,
    /// The finished games' results for White and Black, ends and plies.
    pub tally: GameTally,
    /// Finished games, in the order they finished.
    pub games: Vec<GameResult>,
    pub llr: Option<f64>,
    pub verdict: Option<SprtVerdict>,
    pub wall: Duration,
}

impl MatchReport {
    /// A's games by number, as PGN text in game order.
    pub fn pgn(&self) -> String {
        let mut games: Vec<&GameResult> = self.games.iter().collect();
        games.sort_by_key(|g| g.number);
        games.iter().map(|g| g.pgn.clone()).collect()
    }
}

/// Plays `spec.games` games of `a` against `b` through the game runner, calling
/// `on_game` after each. An Ember player under a node limit is a search side (its leaves
/// batched over all games in flight, one evaluation cache for its network); every other
/// player, Ember under a clock or a move time included, picks its moves alone.
pub fn run_match(
    a: &Prepared,
    b: &Prepared,
    setup: &EmberSetup,
    spec: &MatchSpec,
    on_game: impl FnMut(&MatchReport),
) -> Result<MatchReport> {
    let searches = [spec.search.clone(), spec.search.clone()];
    run_match_searched(a, b, setup, spec, &searches, on_game)
}

/// [`run_match`] with each side's own search (`searches[0]` for `a`) in place of
/// `spec.search`: Ember against itself with other search parameters (`trainer tune`).
pub fn run_match_searched(
    a: &Prepared,
    b: &Prepared,
    setup: &EmberSetup,
    spec: &MatchSpec,
    searches: &[SearchParams; 2],
    mut on_game: impl FnMut(&MatchReport),
) -> Result<MatchReport> {
    if spec.openings.is_empty() {
        bail!("a match needs at least one opening");
    }
    let start = Instant::now();
    let mut report = MatchReport {
        name_a: a.label().to_string(),
        name_b: b.label().to_string(),
        ..MatchReport::default()
    };
    // Both players start before any game: a command that does not run is an error here.
    drop(a.player(setup, spec.seed)?);
    drop(b.player(setup, spec.seed ^ 1)?);
    let prepared = [a, b];
    let mut evaluators: Vec<Option<NetEvaluator>> = Vec::new();
    for p in prepared {
        evaluators.push(match (p.network(), spec.limit) {
            (Some(net), Limit::Nodes(_)) => {
                let mut e = NetEvaluator::new(net, setup.precision)?;
                e.set_threads(rayon::current_num_threads());
                Some(e)
            }
            _ => None,
        });
    }
    let starters: [Box<StartPlayer<'_>>; 2] =
        prepared.map(|p| -> Box<StartPlayer<'_>> { Box::new(move |seed| p.player(setup, seed)) });
    let mut sides = Vec::new();
    for (((p, eval), start), search) in prepared
        .iter()
        .zip(evaluators.iter_mut())
        .zip(&starters)
        .zip(searches)
    {
        sides.push(match (eval, spec.limit) {
            (Some(e), Limit::Nodes(n)) => Side::Search(SearchSide {
                name: p.label().to_string(),
                evaluator: e,
                params: SearchParams {
                    solver: setup.solver,
                    ..search.clone()
                },
                nodes: n.clamp(2, u32::MAX as u64) as u32,
                record_samples: false,
                fast: None,
            }),
            _ => Side::Player(PlayerSide {
                name: p.label().to_string(),
                start: start.as_ref(),
            }),
        });
    }
    let sides: [Side; 2] = sides.try_into().map_err(|_| anyhow!("two sides"))?;
    let rules = Rules::plain(spec.max_plies, spec.random_opening_plies, 0);
    let schedule = Schedule {
        games: spec.games.div_ceil(2).max(1) * 2,
        in_flight: spec.concurrency.max(1),
        openings: spec.openings.clone(),
        paired: true,
        seed: spec.seed,
        first_round: 1,
        event: "Ember match".to_string(),
        limit: spec.limit,
        time_limit: None,
        pipeline: false,
    };
    let mut halves: std::collections::HashMap<usize, f64> = Default::default();
    runner::play(Contest::Match(sides), &rules, &schedule, |record| {
        report.tally.add(&record);
        let game = GameResult {
            number: record.index + 1,
            a_white: record.white == 0,
            score_a: record.score(0),
            termination: record.outcome.termination,
            reason: record.reason,
            plies: record.plies,
            pgn: record.pgn,
        };
        report.trinomial.add(game.score_a);
        let pair = (game.number - 1) / 2;
        if let Some(first) = halves.remove(&pair) {
            report.pentanomial.add(first, game.score_a);
        } else {
            halves.insert(pair, game.score_a);
        }
        report.games.push(game);
        let mut flow = ControlFlow::Continue(());
        if let Some(sprt) = &spec.sprt {
            // Pairs when there are any, else games.
            let llr = if report.pentanomial.pairs() > 0 {
                report.pentanomial.llr(sprt.elo0, sprt.elo1)
            } else {
                report.trinomial.llr(sprt.elo0, sprt.elo1)
            };
            let verdict = sprt.verdict(llr);
            report.llr = Some(llr);
            report.verdict = Some(verdict);
            if verdict != SprtVerdict::Continue {
                flow = ControlFlow::Break(());
            }
        }
        report.wall = start.elapsed();
        on_game(&report);
        flow
    })?;
    report.wall = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::players::PlayerSpec;
    use candle_core::Device;

    fn setup() -> EmberSetup {
        EmberSetup {
            embedded: None,
            device: Device::Cpu,
            precision: crate::Precision::F32,
            threads: 1,
            solver: true,
        }
    }

    #[test]
    fn the_book_in_the_repository_has_at_least_100_playable_positions() {
        let book = parse_openings(DEFAULT_BOOK, "book").unwrap();
        assert!(book.len() >= 100, "{}", book.len());
        let distinct: std::collections::HashSet<&str> =
            book.iter().map(|o| o.fen.as_str()).collect();
        assert_eq!(distinct.len(), book.len());
        for o in &book {
            let g = Game::from_fen(&o.fen).unwrap();
            assert!(g.outcome().is_none(), "{}", o.name);
        }
    }

    #[test]
    fn pgn_openings_are_the_positions_after_their_moves() {
        let pgn =
            "[Event \"a\"]\n\n1. e4 e5 2. Nf3 {main} (2. f4) Nc6 *\n\n[Event \"b\"]\n\n1. d4 *\n";
        let o = parse_openings(pgn, "t.pgn").unwrap();
        assert_eq!(o.len(), 2);
        assert!(o[0]
            .fen
            .starts_with("r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w"));
        assert!(o[1]
            .fen
            .starts_with("rnbqkbnr/pppppppp/8/8/3P4/8/PPP1PPPP/RNBQKBNR b"));
        assert!(parse_openings("# nothing\n", "e.epd").is_err());
    }

    #[test]
    fn the_chess960_book_reads_only_as_chess960() {
        let book = parse_openings_in(CHESS960_BOOK, "960", CastlingMode::Chess960).unwrap();
        assert_eq!(book.len(), 20);
        let distinct: std::collections::HashSet<&str> =
            book.iter().map(|o| o.fen.as_str()).collect();
        assert_eq!(distinct.len(), 20);
        for o in &book {
            assert_eq!(o.castling, CastlingMode::Chess960);
            let game = o.game().unwrap();
            assert_eq!(game.castling_mode(), CastlingMode::Chess960);
            // All four castling rights survive, whatever the rooks' files.
            assert_eq!(
                shakmaty::Position::castles(game.position())
                    .castling_rights()
                    .count(),
                4,
                "{}",
                o.name
            );
            assert!(game.to_pgn(None, &[]).contains("[Variant \"Chess960\"]"));
        }
        // As standard chess these rights cannot be read.
        assert!(parse_openings(CHESS960_BOOK, "960").is_err());
        // A standard book stays standard, its PGN untagged.
        let standard = parse_openings(DEFAULT_BOOK, "book").unwrap();
        assert!(standard
            .iter()
            .all(|o| o.castling == CastlingMode::Standard));
        assert!(!standard[0]
            .game()
            .unwrap()
            .to_pgn(None, &[])
            .contains("Variant"));
    }

    #[test]
    fn pgn_openings_take_chess960_from_their_variant_tag_and_any_result() {
        let pgn = "[Variant \"Chess960\"]\n[FEN \"qnbnrkrb/pppppppp/8/8/8/8/PPPPPPPP/QNBNRKRB w KQkq - 0 1\"]\n\n1. O-O O-O 1/2-1/2\n\n[Event \"b\"]\n\n1. e4 1/2-1/2\n";
        let o = parse_openings(pgn, "t.pgn").unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].castling, CastlingMode::Chess960);
        // Both kings castled short: king to g, rook to f.
        assert!(
            o[0].fen
                .starts_with("qnbnrrkb/pppppppp/8/8/8/8/PPPPPPPP/QNBNRRKB w"),
            "{}",
            o[0].fen
        );
        assert_eq!(o[1].castling, CastlingMode::Standard);
        assert!(o[1]
            .fen
            .starts_with("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b"));
    }

    #[test]
    fn time_controls_parse() {
        assert_eq!(
            "10+0.1".parse::<Limit>().unwrap(),
            Limit::Clock {
                base_ms: 10_000,
                inc_ms: 100
            }
        );
        assert!("0+1".parse::<Limit>().is_err());
        assert!("ten".parse::<Limit>().is_err());
    }

    /// Greedy against random over the book, 1 node a move, 300-ply cap.
    fn greedy_vs_random(
        games: usize,
        concurrency: usize,
        sprt: Option<Sprt>,
        on_game: impl FnMut(&MatchReport),
    ) -> MatchReport {
        let s = setup();
        let greedy = Prepared::new(PlayerSpec::Greedy, &s).unwrap();
        let random = Prepared::new(PlayerSpec::Random, &s).unwrap();
        let spec = MatchSpec {
            games,
            limit: Limit::Nodes(1),
            openings: parse_openings(DEFAULT_BOOK, "book").unwrap(),
            max_plies: 300,
            random_opening_plies: 0,
            search: SearchParams::for_matches(),
            concurrency,
            sprt,
            seed: 5,
        };
        run_match(&greedy, &random, &s, &spec, on_game).unwrap()
    }

    #[test]
    fn minimax_two_beats_greedy_as_a_rung_above_it() {
        let s = setup();
        let minimax = Prepared::new("minimax:2".parse().unwrap(), &s).unwrap();
        let greedy = Prepared::new(PlayerSpec::Greedy, &s).unwrap();
        let spec = MatchSpec {
            games: 10,
            limit: Limit::Nodes(1),
            openings: parse_openings(DEFAULT_BOOK, "book").unwrap(),
            max_plies: 200,
            random_opening_plies: 0,
            search: SearchParams::for_matches(),
            concurrency: 2,
            sprt: None,
            seed: 3,
        };
        let r = run_match(&minimax, &greedy, &s, &spec, |_| {}).unwrap();
        assert_eq!(r.games.len(), 10);
        assert!(r.trinomial.estimate().score >= 0.8, "{:?}", r.trinomial);
        assert!(r.pgn().contains("[White \"minimax:2\"]"));
    }

    #[test]
    fn greedy_beats_random_and_pairs_are_counted() {
        let mut seen = 0;
        let r = greedy_vs_random(20, 2, None, |_| seen += 1);
        assert_eq!((seen, r.games.len(), r.trinomial.games()), (20, 20, 20));
        assert_eq!(r.pentanomial.pairs(), 10);
        assert!(r.trinomial.estimate().score > 0.5, "{:?}", r.trinomial);
        let pgn = r.pgn();
        assert_eq!(pgn.matches("[Result ").count(), 20);
        let mut numbers: Vec<usize> = r.games.iter().map(|g| g.number).collect();
        numbers.sort();
        assert_eq!(numbers, (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn an_sprt_stops_a_lopsided_match_early() {
        let r = greedy_vs_random(2000, 1, Some("0,50".parse().unwrap()), |_| {});
        assert_eq!(r.verdict, Some(SprtVerdict::H1), "{:?}", r.trinomial);
        assert!(r.games.len() < 2000);
    }
}
