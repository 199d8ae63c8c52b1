//! `ember`: Ember's UCI engine, for chess GUIs (Cute Chess, Arena, BanksiaGUI) and
//! tournament managers.
//!
//! It reads UCI commands on stdin, one line at a time as raw bytes (so NUL bytes, invalid
//! UTF-8, `\r\n` and megabyte lines are input like any other), and answers on stdout.
//! Searches run on a worker thread, so `isready`, `stop` and `ponderhit` are answered
//! during a search. No input may crash it: lines are sanitised before parsing
//! ([`input`]), bad commands get `info string error: ...`, and a panic anywhere is caught
//! and reported on stderr, never on stdout.
//!
//! Scores: Q (the search's expected outcome in [-1, 1]) is printed as centipawns by lc0's
//! formula `cp = 90 * tan(1.5637541897 * Q)`; see [`report`] for that, mate scores and
//! WDL. Options and their units: see [`options`]. Time management: see
//! `ember_engine::timeman`. Extras: `d`, `eval`, `bench [nodes]` ([`extras`]).
//!
//! Logging (`RUST_LOG=info`) goes to stderr. The option `LogFile` keeps a log of every
//! line in and out ([`output`]).

mod engine;
mod extras;
mod input;
mod network;
mod options;
mod output;
mod report;
mod searcher;

use std::io::BufRead;

fn main() {
    ember_engine::sys::configure_cpu_runtime();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Stderr)
        .init();
    // The default hook prints to stderr too, but with a backtrace hint; keep it to one line.
    std::panic::set_hook(Box::new(|info| eprintln!("ember: internal error: {info}")));

    let mut engine = match engine::Engine::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ember: cannot start: {e:#}");
            std::process::exit(1);
        }
    };
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("ember: reading stdin failed: {e}");
                break;
            }
        }
        let line = input::sanitize(&raw);
        output::log_input(&line);
        let command = std::panic::catch_unwind(|| input::parse_line(&line)).unwrap_or_else(|_| {
            input::Command::Invalid(format!("could not parse {}", input::echo(&line)))
        });
        if engine.handle(command) == engine::Flow::Quit {
            break;
        }
    }
    engine.finish_search();
}
