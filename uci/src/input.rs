//! Turning one line of GUI input into a [`Command`], whatever the bytes are.
//!
//! Every line is first sanitised: decoded lossily from UTF-8, control characters (NUL,
//! escape, `\r`) turned into spaces, whitespace collapsed. Then:
//! - `position` and `go` are read by our own tokenizers. vampirc-uci's grammar accepts
//!   only `KQkq` castling in a FEN (Chess960/Shredder FENs and some legal positions fail),
//!   panics on numbers above 255 in `go depth/mate/movestogo`, and keeps a single time
//!   control per `go`, so `go ponder wtime ...` would lose either the `ponder` or the clock.
//!   Numbers here are clamped into range (negative clocks become 0) and unknown `go`
//!   tokens are skipped and reported.
//! - `d`, `bench` and `eval` are extras vampirc does not know.
//! - every other UCI command is parsed by vampirc-uci, inside `catch_unwind` as a last
//!   line of defence: a panic in the parser becomes an error line, never a dead engine.
//! - anything else is [`Command::Unknown`] and gets an `info string error`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;
use vampirc_uci::UciMessage;

/// Largest clock or movetime accepted, in milliseconds (about 31 years).
pub const MAX_MILLIS: u64 = 999_999_999_999;
/// Largest `go nodes` accepted.
pub const MAX_NODES: u64 = 999_999_999_999;
/// Largest `go depth`, `go mate` and `go movestogo` accepted.
pub const MAX_SMALL: u64 = 255;
/// Longest text of a bad line echoed back in an error message.
const ECHO_CHARS: usize = 60;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PositionStart {
    StartPos,
    Fen(String),
}

/// `position startpos|fen <fen> [moves m1 m2 ...]`, not yet checked against the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PositionCommand {
    pub start: PositionStart,
    pub moves: Vec<String>,
}

/// Every `go` parameter; absent ones are `None`/empty. Times are for the side named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoCommand {
    pub wtime: Option<Duration>,
    pub btime: Option<Duration>,
    pub winc: Option<Duration>,
    pub binc: Option<Duration>,
    pub movestogo: Option<u32>,
    pub movetime: Option<Duration>,
    pub nodes: Option<u64>,
    pub depth: Option<u32>,
    pub mate: Option<u32>,
    pub infinite: bool,
    pub ponder: bool,
    /// Moves as written; checked against the position when the search starts.
    pub searchmoves: Vec<String>,
    /// Tokens that were skipped (unknown keyword, value missing or not a number).
    pub ignored: Vec<String>,
}

impl GoCommand {
    /// True when nothing limits the search (plain `go`): it runs until `stop`.
    pub fn is_unlimited(&self) -> bool {
        self.wtime.is_none()
            && self.btime.is_none()
            && self.movetime.is_none()
            && self.nodes.is_none()
            && self.depth.is_none()
            && self.mate.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Uci,
    Debug(bool),
    IsReady,
    UciNewGame,
    Position(PositionCommand),
    Go(GoCommand),
    Stop,
    PonderHit,
    Quit,
    SetOption {
        name: String,
        value: Option<String>,
    },
    Register,
    /// `d`: print the board, FEN and hash.
    Display,
    /// `bench [nodes]`.
    Bench(Option<u64>),
    /// `eval`: the network's view of the current position.
    Eval,
    /// Blank line: nothing to do.
    Empty,
    /// A line that is not a command, with the reason.
    Invalid(String),
}

/// Decodes raw bytes (any encoding, any control characters) into one clean line:
/// invalid UTF-8 becomes U+FFFD, control characters become spaces, runs of whitespace
/// become one space, and the ends are trimmed.
pub fn sanitize(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Parses one sanitised line.
pub fn parse_line(line: &str) -> Command {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let Some(first) = tokens.first() else {
        return Command::Empty;
    };
    match first.to_ascii_lowercase().as_str() {
        "position" => parse_position(&tokens[1..]),
        "go" => Command::Go(parse_go(&tokens[1..])),
        "d" => Command::Display,
        "eval" => Command::Eval,
        "bench" => parse_bench(&tokens[1..]),
        "uci" | "debug" | "isready" | "setoption" | "register" | "ucinewgame" | "stop"
        | "ponderhit" | "quit" => parse_with_vampirc(line),
        _ => Command::Invalid(format!("unknown command {}", echo(line))),
    }
}

/// A bad line as it appears in an error message: shortened, quoted.
pub fn echo(text: &str) -> String {
    if text.chars().count() <= ECHO_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(ECHO_CHARS).collect();
        format!("{head:?}... ({} bytes)", text.len())
    }
}

fn parse_with_vampirc(line: &str) -> Command {
    let parsed = catch_unwind(AssertUnwindSafe(|| vampirc_uci::parse_one(line)));
    let message = match parsed {
        Ok(m) => m,
        Err(_) => return Command::Invalid(format!("the UCI parser rejected {}", echo(line))),
    };
    match message {
        UciMessage::Uci => Command::Uci,
        UciMessage::Debug(on) => Command::Debug(on),
        UciMessage::IsReady => Command::IsReady,
        UciMessage::UciNewGame => Command::UciNewGame,
        UciMessage::Stop => Command::Stop,
        UciMessage::PonderHit => Command::PonderHit,
        UciMessage::Quit => Command::Quit,
        UciMessage::Register { .. } => Command::Register,
        UciMessage::SetOption { name, value } => {
            let name = name.trim().to_string();
            let value = value
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty());
            if name.is_empty() {
                Command::Invalid(format!("setoption without an option name: {}", echo(line)))
            } else {
                Command::SetOption { name, value }
            }
        }
        _ => Command::Invalid(format!("malformed command {}", echo(line))),
    }
}

fn parse_position(args: &[&str]) -> Command {
    let moves_at = args.iter().position(|t| t.eq_ignore_ascii_case("moves"));
    let (head, moves) = match moves_at {
        Some(i) => (
            &args[..i],
            args[i + 1..].iter().map(|m| m.to_string()).collect(),
        ),
        None => (args, Vec::new()),
    };
    let start = match head.split_first() {
        Some((kind, rest)) if kind.eq_ignore_ascii_case("startpos") => {
            if !rest.is_empty() {
                return Command::Invalid(format!(
                    "unexpected text after startpos: {}",
                    echo(&rest.join(" "))
                ));
            }
            PositionStart::StartPos
        }
        Some((kind, rest)) if kind.eq_ignore_ascii_case("fen") => {
            if rest.is_empty() {
                return Command::Invalid("position fen without a FEN".to_string());
            }
            PositionStart::Fen(rest.join(" "))
        }
        _ => return Command::Invalid("position needs startpos or fen <FEN>".to_string()),
    };
    Command::Position(PositionCommand { start, moves })
}

fn parse_bench(args: &[&str]) -> Command {
    match args.first() {
        None => Command::Bench(None),
        Some(t) => match t.parse::<u64>() {
            Ok(n) if n > 0 => Command::Bench(Some(n.min(MAX_NODES))),
            _ => Command::Invalid(format!(
                "bench takes a positive node count, not {}",
                echo(t)
            )),
        },
    }
}

/// An integer token clamped into `0..=max`: negative numbers become 0, numbers too large
/// for any integer type become `max`. `None` if the token is not an integer at all.
pub fn clamped_number(token: &str, max: u64) -> Option<u64> {
    let (negative, digits) = match token.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, token.strip_prefix('+').unwrap_or(token)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        return Some(0);
    }
    Some(digits.parse::<u64>().map_or(max, |n| n.min(max)))
}

/// A syntactically plausible UCI move (`e2e4`, `e7e8q`); legality is checked later.
fn looks_like_move(token: &str) -> bool {
    let b = token.as_bytes();
    let square = |f: u8, r: u8| (b'a'..=b'h').contains(&f) && (b'1'..=b'8').contains(&r);
    match b.len() {
        4 => square(b[0], b[1]) && square(b[2], b[3]),
        5 => {
            square(b[0], b[1])
                && square(b[2], b[3])
                && b"nbrqk".contains(&b[4].to_ascii_lowercase())
        }
        _ => token == "0000",
    }
}

/// Reads `go` parameters in any order; see the module doc for the rules.
pub fn parse_go(args: &[&str]) -> GoCommand {
    let mut go = GoCommand::default();
    let mut i = 0;
    while i < args.len() {
        let key = args[i].to_ascii_lowercase();
        i += 1;
        let millis = |v: Option<u64>| v.map(Duration::from_millis);
        let value = |i: usize, max: u64| args.get(i).and_then(|t| clamped_number(t, max));
        let consumed = match key.as_str() {
            "infinite" => {
                go.infinite = true;
                continue;
            }
            "ponder" => {
                go.ponder = true;
                continue;
            }
            "searchmoves" => {
                while i < args.len() && looks_like_move(args[i]) {
                    go.searchmoves.push(args[i].to_ascii_lowercase());
                    i += 1;
                }
                continue;
            }
            "wtime" => value(i, MAX_MILLIS).map(|v| go.wtime = millis(Some(v))),
            "btime" => value(i, MAX_MILLIS).map(|v| go.btime = millis(Some(v))),
            "winc" => value(i, MAX_MILLIS).map(|v| go.winc = millis(Some(v))),
            "binc" => value(i, MAX_MILLIS).map(|v| go.binc = millis(Some(v))),
            "movetime" => value(i, MAX_MILLIS).map(|v| go.movetime = millis(Some(v))),
            "movestogo" => {
                value(i, MAX_SMALL).map(|v| go.movestogo = Some(v as u32).filter(|&m| m > 0))
            }
            "depth" => value(i, MAX_SMALL).map(|v| go.depth = Some(v as u32)),
            "mate" => value(i, MAX_SMALL).map(|v| go.mate = Some(v as u32)),
            "nodes" => value(i, MAX_NODES).map(|v| go.nodes = Some(v)),
            _ => {
                go.ignored.push(args[i - 1].to_string());
                continue;
            }
        };
        match consumed {
            Some(()) => i += 1,
            None => go.ignored.push(format!("{} (needs a number)", args[i - 1])),
        }
    }
    go
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(line: &str) -> GoCommand {
        match parse_line(line) {
            Command::Go(g) => g,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn sanitize_turns_nul_and_control_bytes_into_spaces() {
        assert_eq!(sanitize(b"go\x00nodes 5\r"), "go nodes 5");
        assert_eq!(sanitize(b"\x1b[2Jisready"), "[2Jisready");
    }

    #[test]
    fn sanitize_replaces_invalid_utf8_instead_of_failing() {
        let s = sanitize(b"\xff\xfe position startpos");
        assert!(s.ends_with("position startpos"), "{s:?}");
    }

    #[test]
    fn sanitize_strips_windows_line_endings() {
        assert_eq!(sanitize(b"isready\r\n"), "isready");
        assert_eq!(parse_line(&sanitize(b"isready\r\n")), Command::IsReady);
    }

    #[test]
    fn blank_lines_are_empty_commands() {
        assert_eq!(parse_line(&sanitize(b"  \t \r\n")), Command::Empty);
    }

    #[test]
    fn go_depth_above_255_is_clamped_instead_of_panicking() {
        assert_eq!(go("go depth 300").depth, Some(255));
        assert_eq!(go("go depth 99999999999999999999").depth, Some(255));
        assert_eq!(go("go mate 1000").mate, Some(255));
        assert_eq!(go("go movestogo 256").movestogo, Some(255));
    }

    #[test]
    fn go_negative_clocks_become_zero() {
        let g = go("go wtime -5 btime -5");
        assert_eq!(
            (g.wtime, g.btime),
            (Some(Duration::ZERO), Some(Duration::ZERO))
        );
    }

    #[test]
    fn go_numbers_beyond_u64_are_clamped() {
        assert_eq!(go("go nodes 18446744073709551616").nodes, Some(MAX_NODES));
        assert_eq!(
            go("go wtime 99999999999999999999999 btime 1").wtime,
            Some(Duration::from_millis(MAX_MILLIS))
        );
    }

    #[test]
    fn go_reads_every_parameter_in_any_order() {
        let g = go("go searchmoves e2e4 d2d4 wtime 1000 btime 2000 winc 10 binc 20 movestogo 5 nodes 7 depth 3");
        assert_eq!(g.searchmoves, vec!["e2e4", "d2d4"]);
        assert_eq!(g.wtime, Some(Duration::from_millis(1000)));
        assert_eq!(g.btime, Some(Duration::from_millis(2000)));
        assert_eq!(g.winc, Some(Duration::from_millis(10)));
        assert_eq!(g.binc, Some(Duration::from_millis(20)));
        assert_eq!((g.movestogo, g.nodes, g.depth), (Some(5), Some(7), Some(3)));
    }

    #[test]
    fn go_ponder_keeps_its_clock() {
        let g = go("go ponder wtime 2000 btime 3000");
        assert!(g.ponder);
        assert_eq!(g.wtime, Some(Duration::from_millis(2000)));
    }

    #[test]
    fn go_skips_unknown_tokens_and_missing_values() {
        let g = go("go nodes 50 frobnicate 7 wtime");
        assert_eq!(g.nodes, Some(50));
        assert_eq!(g.wtime, None);
        assert_eq!(g.ignored.len(), 3, "{:?}", g.ignored);
    }

    #[test]
    fn go_with_non_numeric_clocks_is_unlimited() {
        assert!(go("go wtime abc btime def").is_unlimited());
        assert!(go("go").is_unlimited());
        assert!(!go("go nodes 1").is_unlimited());
    }

    #[test]
    fn position_fen_with_shredder_castling_reaches_the_fen_reader() {
        let cmd = parse_line(
            "position fen rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w HAha - 0 1 moves e2e4",
        );
        let Command::Position(p) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(
            p.start,
            PositionStart::Fen("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w HAha - 0 1".into())
        );
        assert_eq!(p.moves, vec!["e2e4"]);
    }

    #[test]
    fn truncated_position_commands_are_invalid() {
        for line in [
            "position",
            "position fen",
            "position startpos fen 8/8/8/8/8/8/8/8 w - - 0 1",
            "position foo",
        ] {
            assert!(matches!(parse_line(line), Command::Invalid(_)), "{line}");
        }
    }

    #[test]
    fn position_startpos_moves_without_moves_is_the_start_position() {
        assert_eq!(
            parse_line("position startpos moves"),
            Command::Position(PositionCommand {
                start: PositionStart::StartPos,
                moves: vec![]
            })
        );
    }

    #[test]
    fn setoption_is_parsed_by_vampirc() {
        assert_eq!(
            parse_line("setoption name MultiPV value 3"),
            Command::SetOption {
                name: "MultiPV".into(),
                value: Some("3".into())
            }
        );
    }

    #[test]
    fn setoption_with_value_and_nothing_after_it_has_no_value() {
        for line in ["setoption name LogFile value", "setoption name LogFile"] {
            assert_eq!(
                parse_line(&sanitize(format!("{line} \r\n").as_bytes())),
                Command::SetOption {
                    name: "LogFile".into(),
                    value: None
                },
                "{line}"
            );
        }
        assert_eq!(
            parse_line("setoption name LogFile value /tmp/a b.log"),
            Command::SetOption {
                name: "LogFile".into(),
                value: Some("/tmp/a b.log".into())
            }
        );
    }

    #[test]
    fn setoption_without_a_name_is_invalid() {
        assert!(matches!(parse_line("setoption"), Command::Invalid(_)));
        assert!(matches!(parse_line("setoption name"), Command::Invalid(_)));
    }

    #[test]
    fn near_miss_commands_are_not_mistaken_for_real_ones() {
        for line in ["quitx", "ucinewgamex", "\u{202e}isready", "🙂🙂🙂"] {
            assert!(matches!(parse_line(line), Command::Invalid(_)), "{line}");
        }
    }

    #[test]
    fn garbage_of_every_byte_value_never_panics() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        for chunk in bytes.chunks(37) {
            let _ = parse_line(&sanitize(chunk));
        }
        let _ = parse_line(&sanitize(&vec![b'x'; 1 << 20]));
    }

    #[test]
    fn commands_known_to_vampirc_parse() {
        assert_eq!(parse_line("uci"), Command::Uci);
        assert_eq!(parse_line("isready"), Command::IsReady);
        assert_eq!(parse_line("ucinewgame"), Command::UciNewGame);
        assert_eq!(parse_line("stop"), Command::Stop);
        assert_eq!(parse_line("ponderhit"), Command::PonderHit);
        assert_eq!(parse_line("quit"), Command::Quit);
        assert_eq!(parse_line("debug on"), Command::Debug(true));
        assert_eq!(parse_line("register later"), Command::Register);
    }

    #[test]
    fn extras_parse() {
        assert_eq!(parse_line("d"), Command::Display);
        assert_eq!(parse_line("eval"), Command::Eval);
        assert_eq!(parse_line("bench"), Command::Bench(None));
        assert_eq!(parse_line("bench 100"), Command::Bench(Some(100)));
        assert!(matches!(parse_line("bench -3"), Command::Invalid(_)));
    }
}
