//! `ndop`: check an extract against the National Data Opt-out through the POS over MESH.
//!
//! A thin binary: parse arguments, call the library, map the result to an exit code
//! (see [`exit`]). A broken pipe on standard output is not an error.

mod args;
mod cached;
mod cmd;
mod evidence;
mod exit;
mod pipeline;
mod progress;
mod report;
mod sample;
mod settings;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Check extracts against the National Data Opt-out: validate NHS numbers, prepare POS files,
/// send them over MESH, collect the replies, reconcile and filter.
#[derive(Debug, Parser)]
#[command(name = "ndop", version, after_help = exit::HELP, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Prepare(cmd::prepare::PrepareArgs),
    Validate(cmd::validate::ValidateArgs),
    Generate(cmd::generate::GenerateArgs),
    Reconcile(cmd::reconcile::ReconcileArgs),
    Filter(cmd::filter::FilterArgs),
    Send(cmd::send::SendArgs),
    Collect(cmd::collect::CollectArgs),
    Run(cmd::run::RunArgs),
    Demo(cmd::demo::DemoArgs),
    Cache(cmd::cache::CacheArgs),
    Report(cmd::report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Prepare(a) => cmd::prepare::run(a),
        Command::Validate(a) => cmd::validate::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Reconcile(a) => cmd::reconcile::run(a),
        Command::Filter(a) => cmd::filter::run(a),
        Command::Send(a) => cmd::send::run(a),
        Command::Collect(a) => cmd::collect::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Cache(a) => cmd::cache::run(a),
        Command::Report(a) => cmd::report::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if exit::is_broken_pipe(&e) {
                return ExitCode::from(exit::OK);
            }
            eprintln!("ndop: error: {}", exit::message(&e));
            ExitCode::from(exit::code_for(&e))
        }
    }
}
