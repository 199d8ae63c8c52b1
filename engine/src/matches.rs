//! Matches between any two [`players`](crate::players): openings played in pairs (each
//! with both colours), several games at once, clocks enforced, external engines that
//! fail a move scored as losing that game, and the score reported as W/D/L, Elo with 95%
//! intervals from games and from pairs, LOS, and optionally an SPRT that stops the match
//! at either bound (see [`crate::stats`]).

use crate::game::{Game, GameOutcome, Termination};
use crate::players::{EmberSetup, Failure, MoveLimit, Player, Prepared};
use crate::stats::{Pentanomial, Sprt, SprtVerdict, Trinomial};
use anyhow::{anyhow, bail, Context, Result};
use shakmaty::{Color, KnownOutcome, Position};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The opening book kept in the repository: 120 positions a few plies deep, each within
/// 50 centipawns at Stockfish depth 12 (`scripts/make-openings` made it).
pub const DEFAULT_BOOK: &str = include_str!("../../data/openings/ember-120.epd");

/// A position games start from.
#[derive(Clone, Debug, PartialEq)]
pub struct Opening {
    pub fen: String,
    /// Where it came from, for the PGN (`ember-007`, `book.pgn #3`).
    pub name: String,
}

/// Openings from EPD text (one position a line, `#` comments) or PGN text (each game's
/// moves from its start position).
pub fn parse_openings(text: &str, origin: &str) -> Result<Vec<Opening>> {
    let looks_pgn = text.lines().any(|l| l.trim_start().starts_with('['));
    let openings = if looks_pgn {
        parse_pgn_openings(text, origin)?
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
            Game::from_fen(&fen).with_context(|| format!("{origin} line {}", i + 1))?;
            let name = line
                .split("id \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map_or_else(|| format!("{origin}:{}", i + 1), String::from);
            out.push(Opening { fen, name });
        }
        out
    };
    if openings.is_empty() {
        bail!("{origin} holds no opening positions");
    }
    Ok(openings)
}

fn parse_pgn_openings(text: &str, origin: &str) -> Result<Vec<Opening>> {
    use shakmaty::san::San;
    let mut out = Vec::new();
    let mut fen: Option<String> = None;
    let mut movetext = String::new();
    let mut flush = |fen: &mut Option<String>, movetext: &mut String| -> Result<()> {
        if movetext.trim().is_empty() && fen.is_none() {
            return Ok(());
        }
        let mut game = match fen.take() {
            Some(f) => Game::from_fen(&f)?,
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
            let token = token.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
            if token.is_empty() || ["1-0", "0-1", "1/2-1/2", "*"].contains(&token) {
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
        });
        movetext.clear();
        Ok(())
    };
    let mut in_moves = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if in_moves {
                flush(&mut fen, &mut movetext)?;
                in_moves = false;
            }
            if let Some(v) = t.strip_prefix("[FEN \"") {
                fen = Some(v.trim_end_matches("\"]").to_string());
            }
        } else if !t.is_empty() {
            in_moves = true;
            movetext.push(' ');
            movetext.push_str(t);
        }
    }
    flush(&mut fen, &mut movetext)?;
    Ok(out)
}

/// Reads an opening file (`.epd` or `.pgn`).
pub fn read_openings(path: &Path) -> Result<Vec<Opening>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading openings from {}", path.display()))?;
    parse_openings(&text, &path.display().to_string())
}

/// The limit every move of a match is played under.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    Nodes(u64),
    MoveTime(u64),
    /// Base time and increment per game, milliseconds.
    Clock {
        base_ms: u64,
        inc_ms: u64,
    },
}

impl std::str::FromStr for Limit {
    type Err = String;
    /// A time control `BASE+INC` in seconds (`10+0.1`, `60`).
    fn from_str(s: &str) -> Result<Limit, String> {
        let (base, inc) = s.split_once('+').unwrap_or((s, "0"));
        let secs = |x: &str| {
            x.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("--tc {s:?}: expected BASE+INC in seconds, e.g. 10+0.1"))
        };
        let (base, inc) = (secs(base)?, secs(inc)?);
        if base <= 0.0 {
            return Err(format!("--tc {s:?}: the base time must be above 0"));
        }
        Ok(Limit::Clock {
            base_ms: (base * 1000.0).round() as u64,
            inc_ms: (inc * 1000.0).round() as u64,
        })
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Nodes(n) => write!(f, "{n} nodes/move"),
            Limit::MoveTime(ms) => write!(f, "{ms} ms/move"),
            Limit::Clock { base_ms, inc_ms } => {
                write!(
                    f,
                    "{}+{}",
                    *base_ms as f64 / 1000.0,
                    *inc_ms as f64 / 1000.0
                )
            }
        }
    }
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

/// Plays `spec.games` games of `a` against `b`, calling `on_game` after each.
pub fn run_match(
    a: &Prepared,
    b: &Prepared,
    setup: &EmberSetup,
    spec: &MatchSpec,
    mut on_game: impl FnMut(&MatchReport),
) -> Result<MatchReport> {
    if spec.openings.is_empty() {
        bail!("a match needs at least one opening");
    }
    let pairs = spec.games.div_ceil(2).max(1);
    let workers = spec.concurrency.clamp(1, pairs);
    let next_pair = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let mut report = MatchReport {
        name_a: a.label().to_string(),
        name_b: b.label().to_string(),
        ..MatchReport::default()
    };
    // Both players start before any game: a command that does not run is an error here.
    drop(a.player(setup, spec.seed)?);
    drop(b.player(setup, spec.seed ^ 1)?);
    let (tx, rx) = mpsc::channel::<Result<GameResult>>();
    let mut halves: std::collections::HashMap<usize, f64> = Default::default();
    std::thread::scope(|scope| -> Result<()> {
        for w in 0..workers {
            let tx = tx.clone();
            let (next_pair, stop) = (&next_pair, &stop);
            scope.spawn(move || {
                let mut seats: [Option<Box<dyn Player>>; 2] = [None, None];
                loop {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let pair = next_pair.fetch_add(1, Ordering::AcqRel);
                    if pair >= pairs {
                        return;
                    }
                    let opening = &spec.openings[pair % spec.openings.len()];
                    for second in [false, true] {
                        let number = 2 * pair + 1 + usize::from(second);
                        let seed = spec.seed.wrapping_add((number as u64) << 8 | w as u64);
                        let result = play_one(
                            [a, b],
                            &mut seats,
                            setup,
                            spec,
                            opening,
                            number,
                            !second,
                            seed,
                        );
                        if tx.send(result).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        drop(tx);
        for result in rx {
            let game = match result {
                Ok(g) => g,
                Err(e) => {
                    stop.store(true, Ordering::Release);
                    return Err(e);
                }
            };
            report.trinomial.add(game.score_a);
            let pair = (game.number - 1) / 2;
            if let Some(first) = halves.remove(&pair) {
                report.pentanomial.add(first, game.score_a);
            } else {
                halves.insert(pair, game.score_a);
            }
            report.games.push(game);
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
                    stop.store(true, Ordering::Release);
                }
            }
            report.wall = start.elapsed();
            on_game(&report);
        }
        Ok(())
    })?;
    report.wall = start.elapsed();
    Ok(report)
}

/// Plays game `number` from `opening`, A with White when `a_white`. `seats` holds the
/// worker's A and B players, started when missing and dropped after a failure (so the
/// next game starts the engine afresh).
#[allow(clippy::too_many_arguments)]
fn play_one(
    prepared: [&Prepared; 2],
    seats: &mut [Option<Box<dyn Player>>; 2],
    setup: &EmberSetup,
    spec: &MatchSpec,
    opening: &Opening,
    number: usize,
    a_white: bool,
    seed: u64,
) -> Result<GameResult> {
    let mut game = Game::from_fen(&opening.fen)?;
    // seat 0 is A, seat 1 is B; the side to move's seat:
    let seat_of = |c: Color| usize::from((c == Color::White) != a_white);
    let mut failure: Option<(usize, Termination, String)> = None;
    for s in 0..2 {
        if seats[s].is_none() {
            match prepared[s].player(setup, seed ^ s as u64) {
                Ok(p) => seats[s] = Some(p),
                Err(e) => {
                    failure = Some((s, Termination::Forfeit, format!("could not start: {e:#}")));
                    break;
                }
            }
        }
        if let Some(p) = seats[s].as_mut() {
            if let Err(f) = p.new_game() {
                seats[s] = None;
                failure = Some((s, Termination::Forfeit, f.to_string()));
                break;
            }
        }
    }
    let mut clock = match spec.limit {
        Limit::Clock { base_ms, .. } => [base_ms as i64; 2],
        _ => [0; 2],
    };
    let names = [
        seats[0]
            .as_ref()
            .map_or(prepared[0].label().to_string(), |p| p.name()),
        seats[1]
            .as_ref()
            .map_or(prepared[1].label().to_string(), |p| p.name()),
    ];
    let outcome = loop {
        if let Some((seat, termination, _)) = &failure {
            let loser_white = (*seat == 0) == a_white;
            break GameOutcome {
                result: KnownOutcome::Decisive {
                    winner: if loser_white {
                        Color::Black
                    } else {
                        Color::White
                    },
                },
                termination: *termination,
            };
        }
        if let Some(o) = game.outcome_with_ply_cap(spec.max_plies) {
            break o;
        }
        let turn = game.position().turn();
        let seat = seat_of(turn);
        let limit = match spec.limit {
            Limit::Nodes(n) => MoveLimit::Nodes(n),
            Limit::MoveTime(ms) => MoveLimit::MoveTime(ms),
            Limit::Clock { inc_ms, .. } => MoveLimit::Clock {
                own_ms: clock[seat].max(0) as u64,
                own_inc_ms: inc_ms,
                other_ms: clock[1 - seat].max(0) as u64,
                other_inc_ms: inc_ms,
            },
        };
        let player = seats[seat].as_mut().expect("both seats are filled");
        let t0 = Instant::now();
        let chosen = player.choose(&game, limit);
        let spent = t0.elapsed();
        let over = match spec.limit {
            Limit::Clock { inc_ms, .. } => {
                clock[seat] -= spent.as_millis() as i64;
                let out = clock[seat] < 0;
                clock[seat] += inc_ms as i64;
                out
            }
            // A move time is kept if the move comes within half of it again (and at
            // least 200 ms) past it.
            Limit::MoveTime(ms) => spent > Duration::from_millis(ms + (ms / 2).max(200)),
            Limit::Nodes(_) => false,
        };
        // A hung engine is reported as hung, not as out of time.
        if over && !matches!(chosen, Err(Failure::Hung(_))) {
            failure = Some((
                seat,
                Termination::TimeForfeit,
                format!(
                    "{} ran out of time ({:.2}s for a move)",
                    names[seat],
                    spent.as_secs_f64()
                ),
            ));
            continue;
        }
        match chosen {
            Ok(mv) => game.play(mv),
            Err(f) => {
                if matches!(f, Failure::Crashed(_) | Failure::Hung(_)) {
                    seats[seat] = None;
                }
                failure = Some((seat, Termination::Forfeit, format!("{} {f}", names[seat])));
            }
        }
    };
    let score_white = match outcome.result {
        KnownOutcome::Decisive { winner } if winner == Color::White => 1.0,
        KnownOutcome::Decisive { .. } => 0.0,
        KnownOutcome::Draw => 0.5,
    };
    let score_a = if a_white {
        score_white
    } else {
        1.0 - score_white
    };
    let (white, black) = if a_white {
        (&names[0], &names[1])
    } else {
        (&names[1], &names[0])
    };
    let reason = failure.map(|(_, _, why)| why);
    let mut tags = vec![
        ("Event", "Ember match".to_string()),
        ("Round", number.to_string()),
        ("White", white.clone()),
        ("Black", black.clone()),
        ("Opening", opening.name.clone()),
        ("TimeControl", spec.limit.to_string()),
    ];
    if let Some(why) = &reason {
        tags.push(("TerminationDetails", why.replace('"', "'")));
    }
    let pgn = game.to_pgn(Some(outcome), &tags);
    Ok(GameResult {
        number,
        a_white,
        score_a,
        termination: outcome.termination,
        reason,
        plies: game.ply(),
        pgn,
    })
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
            concurrency,
            sprt,
            seed: 5,
        };
        run_match(&greedy, &random, &s, &spec, on_game).unwrap()
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
