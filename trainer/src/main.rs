//! `trainer`: one binary for the whole curriculum. This file only parses the command line
//! (shapes fixed by shared/design/cli.md) and dispatches; each command lives in its own file.
mod ask;
mod data;
mod eval;
mod exec;
mod generate;
mod init_model;
mod plan;
mod rollout_args;
mod score;
mod submit;
mod stages;
mod synth;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "trainer", version, about = "Train agentic data-science LLMs: SFT curriculum, then GRPO with sandboxed execution")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Curriculum stage to run from CONFIG.
    #[arg(long, value_enum, requires = "config")]
    stage: Option<Stage>,
    /// Stage configuration (TOML).
    config: Option<PathBuf>,
    /// Override a config value: key=value (repeatable).
    #[arg(long = "set")]
    set: Vec<String>,
    /// Resume: auto, never, or a checkpoint folder.
    #[arg(long, default_value = "auto")]
    resume: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Stage {
    SftSingle,
    SftMulti,
    Rl,
    All,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a continuation with a checkpoint.
    Generate(generate::Args),
    /// Teacher-forced log-probabilities of a token sequence, as one JSON object.
    Score(score::Args),
    /// Import published datasets into shards, or inspect shards.
    #[command(subcommand)]
    Data(data::Command),
    /// Synthesize verified training data from real tables.
    Synth(synth::Args),
    /// Run one Python cell in the sandbox (code on stdin); prints the observation.
    Exec(exec::Args),
    /// Multi-turn rollouts of a checkpoint on RL tasks in the sandbox; prints the shares
    /// of well-formed, running and correct trajectories.
    Eval(eval::Args),
    /// A checkpoint analyzes data files: prompt with the files, cells run in the sandbox,
    /// until its answer; prints the trajectory.
    Ask(ask::Args),
    /// Write a randomly initialised Qwen3 checkpoint (HF folder) for a shape and tokenizer.
    InitModel(init_model::Args),
    /// What a run will take: steps, one device's memory by part, FLOPs, a measured step.
    Plan(plan::Args),
    /// Run a config as a Slurm batch job (an sbatch script that resumes on every start).
    Submit(submit::Args),
}

fn main() {
    // A full disk or a file-size limit must surface as a write error naming the file
    // (and leave earlier checkpoints alone), not as a signal that kills the run.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    if let Err(e) = model::init_runtime() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        // Bad arguments: clap's reason on one line, without the usage block.
        Err(e) => {
            let text = e.to_string();
            let reason: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more")).filter(|l| !l.is_empty()).collect();
            eprintln!("{}", reason.join(" "));
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Some(Command::Generate(a)) => generate::run(a),
        Some(Command::Score(a)) => score::run(a),
        Some(Command::InitModel(a)) => init_model::run(a),
        Some(Command::Plan(a)) => plan::run(a),
        Some(Command::Submit(a)) => submit::run(a),
        Some(Command::Exec(a)) => exec::run(a),
        Some(Command::Data(c)) => data::run(c),
        Some(Command::Synth(a)) => synth::run(a),
        Some(Command::Eval(a)) => eval::run(a),
        Some(Command::Ask(a)) => ask::run(a),
        None => match (cli.stage, cli.config) {
            (Some(stage), Some(config)) => {
                let kind = match stage {
                    Stage::SftSingle => Some(curriculum::StageKind::SftSingle),
                    Stage::SftMulti => Some(curriculum::StageKind::SftMulti),
                    Stage::Rl => Some(curriculum::StageKind::Rl),
                    Stage::All => None,
                };
                stages::run(kind, &config, &cli.set, &trainer::sft::Resume::parse(&cli.resume))
            }
            _ => Err(anyhow::anyhow!("nothing to do: give --stage STAGE CONFIG.toml or a command (see --help)")),
        },
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
