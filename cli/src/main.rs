//! `spark`: SparK masked-image pretraining of convnets, and everything around it, from the
//! command line. Run `spark --help`, or just `spark pretrain` for the quick built-in demo.

// Terminal output goes through `outln!` / `out!` / `errln!` (output.rs): a closed pipe must not
// panic a command or abort a training run.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod output;
mod alloc_stats;
mod checkpoint;
mod cmd;
mod common;
mod config;
mod error;
mod interrupt;
mod metrics;
mod plot;
mod progress;
mod run_lock;

use clap::{Parser, Subcommand};
use common::CommonOpts;
use error::CliResult;

#[global_allocator]
static ALLOCATOR: alloc_stats::CountingAlloc = alloc_stats::CountingAlloc;

#[derive(Parser, Debug)]
#[command(
    name = "spark",
    version,
    about = "SparK: sparse masked pretraining of convnets (ResNet, ConvNeXt) on the CPU",
    long_about = "SparK: sparse masked pretraining of convnets (ResNet, ConvNeXt) on the CPU.\n\n\
        Start with `spark pretrain` (no arguments): a few minutes of SparK pretraining of a small \
        ResNet-18 on the built-in photographs, leaving a checkpoint, a reconstruction picture, \
        a metrics log and a loss plot in runs/pretrain.",
    after_help = "Exit codes: 0 success, 1 the work failed, 2 the command line or config is wrong, \
        128 + N stopped by signal N after saving (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)."
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
    /// Fine-tune a classifier from a pretrained encoder (or from scratch).
    Finetune(cmd::finetune::FinetuneArgs),
    /// Top-1 / top-5 accuracy and confusion matrix of a fine-tuned classifier.
    Eval(cmd::eval::EvalArgs),
    /// Classify images with a fine-tuned classifier.
    Predict(cmd::predict::PredictArgs),
    /// Linear probe: a softmax classifier on the frozen encoder's pooled features, scored on test images.
    Probe(cmd::probe::ProbeArgs),
    /// Encoder features (4 scales or pooled) of images to safetensors.
    Extract(cmd::extract::ExtractArgs),
    /// Write the original | masked | reconstruction picture from a pretraining checkpoint.
    Reconstruct(cmd::reconstruct::ReconstructArgs),
    /// Timing tables: gemm, conv, sparse, step.
    Bench(cmd::bench::BenchArgs),
    /// Model summary: SparK contract values, parameters, GMACs.
    Info(cmd::info::InfoArgs),
    /// mmpretrain's SparK model names: task, parameters, FLOPs, top-1, config.
    Models(cmd::models::ModelsArgs),
    /// The pretrained encoder alone, with PyTorch key names, as safetensors.
    Export(cmd::export::ExportArgs),
}

fn run(cli: Cli) -> CliResult<()> {
    match cli.command {
        Command::Pretrain(a) => cmd::pretrain::run(a, cli.common),
        Command::Finetune(a) => cmd::finetune::run(a, cli.common),
        Command::Eval(a) => cmd::eval::run(a, cli.common),
        Command::Predict(a) => cmd::predict::run(a, cli.common),
        Command::Probe(a) => cmd::probe::run(a, cli.common),
        Command::Extract(a) => cmd::extract::run(a, cli.common),
        Command::Reconstruct(a) => cmd::reconstruct::run(a, cli.common),
        Command::Bench(a) => cmd::bench::run(a, cli.common),
        Command::Info(a) => common::no_device("info", &cli.common).and_then(|_| cmd::info::run(a)),
        Command::Models(a) => common::no_device("models", &cli.common).and_then(|_| cmd::models::run(a)),
        Command::Export(a) => common::no_device("export", &cli.common).and_then(|_| cmd::export::run(a)),
    }
}

fn main() {
    spark_engine::cpu::malloc::keep_freed_memory();
    // Bugs (panics) get one line and a pointer, not a backtrace dump.
    std::panic::set_hook(Box::new(|info| {
        errln!("error: internal error: {info}");
        errln!("hint: this is a bug in spark; rerun with RUST_BACKTRACE=1 and report it");
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
        errln!("error: {}", e.msg);
        if let Some(h) = &e.hint {
            errln!("hint: {h}");
        }
        std::process::exit(e.exit_code());
    }
}
