//! `trainer`: trains an Ember network by self-play, and runs matches, benchmarks and
//! exports. A thin binary: argument parsing, progress output and wiring; the work is
//! done by `ember_engine`.

mod cli;
mod commands;
mod config;
mod plot;
mod progress;
mod publish;
mod storage;
mod training;
mod tune;
mod worker;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    ember_engine::sys::configure_cpu_runtime();
    let cli = Cli::parse();
    let progress = progress::init(cli.log_level);
    let result = match &cli.command {
        None => train(&cli.train, progress),
        Some(Command::Train(args)) => train(args, progress),
        Some(Command::Selfplay(args)) => {
            training::Session::open(args, progress).and_then(|mut s| s.self_play_only())
        }
        Some(Command::Bench(args)) => commands::bench(args),
        Some(Command::Check(args)) => commands::check(args),
        Some(Command::Match(args)) => commands::play(args),
        Some(Command::Gauntlet(args)) => commands::gauntlet(args),
        Some(Command::Tune(args)) => tune::tune(args),
        Some(Command::Export(args)) => commands::export(args),
        Some(Command::Worker(args)) => worker::run(args),
        Some(Command::Learn(args)) => {
            training::Session::open_learner(args, progress).and_then(|mut s| s.train())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::logger().flush();
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn train(args: &cli::TrainArgs, progress: progress::Progress) -> anyhow::Result<()> {
    training::Session::open(args, progress)?.train()
}
