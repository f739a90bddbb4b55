//! `spark`: SparK masked-image pretraining of convnets, and everything around it, from the
//! command line. Run `spark --help`, or just `spark pretrain` for the quick built-in demo.

mod checkpoint;
mod cmd;
mod common;
mod config;
mod error;
mod metrics;
mod plot;
mod progress;

use clap::{Parser, Subcommand};
use common::CommonOpts;
use error::CliResult;

#[derive(Parser, Debug)]
#[command(
    name = "spark",
    version,
    about = "SparK: sparse masked pretraining of convnets (ResNet, ConvNeXt) on the CPU",
    long_about = "SparK: sparse masked pretraining of convnets (ResNet, ConvNeXt) on the CPU.\n\n\
        Start with `spark pretrain` (no arguments): a few minutes of SparK pretraining of a small \
        ResNet-18 on the built-in photographs, leaving a checkpoint, a reconstruction picture, \
        a metrics log and a loss plot in runs/pretrain.",
    after_help = "Exit codes: 0 success, 1 the work failed, 2 the command line or config is wrong."
)]
struct Cli {
    #[command(flatten)]
    common: CommonOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// SparK pretraining (quick CPU defaults; --preset official for the paper's settings).
    Pretrain(cmd::pretrain::PretrainArgs),
    /// Write the original | masked | reconstruction picture from a pretraining checkpoint.
    Reconstruct(cmd::reconstruct::ReconstructArgs),
}

fn run(cli: Cli) -> CliResult<()> {
    match cli.command {
        Command::Pretrain(a) => cmd::pretrain::run(a, cli.common),
        Command::Reconstruct(a) => cmd::reconstruct::run(a, cli.common),
    }
}

fn main() {
    // Bugs (panics) get one line and a pointer, not a backtrace dump.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error: {info}");
        eprintln!("hint: this is a bug in spark; rerun with RUST_BACKTRACE=1 and report it");
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help / --version print to stdout and succeed; real usage errors exit with 2.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = run(cli) {
        eprintln!("error: {}", e.msg);
        if let Some(h) = &e.hint {
            eprintln!("hint: {h}");
        }
        std::process::exit(e.exit_code());
    }
}
