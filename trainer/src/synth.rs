//! `trainer synth`: real tables in, verified single-ability samples, trajectories and RL
//! tasks out (parquet shards), with a statistics report.
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sandbox::{Sandbox, SandboxConfig};
use std::path::PathBuf;
use synth::SynthConfig;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Teacher {
    /// Built-in expert policies acting in the sandbox.
    Expert,
    /// An OpenAI-compatible chat endpoint (--base-url, --teacher-model, key from --api-key-env).
    Openai,
}

#[derive(clap::Args)]
pub struct Args {
    /// Folder of data files (csv, tsv, xlsx, parquet, json, sqlite).
    #[arg(long)]
    tables: PathBuf,
    /// Output folder: trajectories/, rl_tasks/, sft_single/ shards and report.json.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 100)]
    tasks: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "expert")]
    teacher: Teacher,
    /// Share of trajectories where the expert first errs and recovers.
    #[arg(long, default_value_t = 0.25)]
    error_rate: f64,
    /// --teacher openai: the endpoint, e.g. https://api.openai.com/v1 or a local vLLM server.
    #[arg(long)]
    base_url: Option<String>,
    /// --teacher openai: the model name the endpoint serves.
    #[arg(long)]
    teacher_model: Option<String>,
    /// --teacher openai: environment variable holding the API key (none sent when unset).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    /// --teacher openai: also have it rephrase each task statement (names, numbers and
    /// files must survive, else the template's wording stays).
    #[arg(long)]
    paraphrase: bool,
    /// A checkpoint folder whose tokenizer measures the trajectories' token lengths.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The sandbox's Python (default: $DEEPANALYZE_SANDBOX_PYTHON, else .venv-sandbox/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if a.paraphrase && matches!(a.teacher, Teacher::Expert) {
        bail!("--paraphrase needs --teacher openai (the endpoint rephrases the tasks)");
    }
    let teacher = match a.teacher {
        Teacher::Expert => None,
        Teacher::Openai => {
            let (Some(base_url), Some(model)) = (a.base_url.clone(), a.teacher_model.clone()) else {
                bail!("--teacher openai needs --base-url and --teacher-model");
            };
            Some(synth::teacher::TeacherConfig { base_url, model, api_key: std::env::var(&a.api_key_env).ok(),
                                                 temperature: 0.7, max_tokens: 4096, max_turns: 30 })
        }
    };
    if !(0.0..=1.0).contains(&a.error_rate) {
        bail!("--error-rate must be in [0, 1], got {}", a.error_rate);
    }
    if a.out.exists() && std::fs::read_dir(&a.out)?.next().is_some() {
        bail!("{}: exists and is not empty; write to a new folder", a.out.display());
    }
    let mut cfg = SandboxConfig::default();
    if let Some(p) = a.python {
        cfg.python = p;
    }
    let sandbox = Sandbox::new(cfg)?;
    let bar = ProgressBar::new(a.tasks as u64)
        .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} tasks solved and inspected ({per_sec}, eta {eta})").unwrap());
    let cfg = SynthConfig { tables: a.tables, out: a.out.clone(), tasks: a.tasks, seed: a.seed, error_rate: a.error_rate, teacher, tokenizer: a.model.clone(), paraphrase: a.paraphrase };
    let report = synth::synthesize(&cfg, &sandbox, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    println!("{} tables ({} skipped), {} tasks posed, {} accepted ({} recovered from an error), {} rejected, {} without ground truth; {} single-ability samples",
             report.tables, report.skipped.len(), report.posed, report.accepted, report.recovered_errors,
             report.rejected.values().sum::<usize>(), report.ground_truth_failed, report.single_ability_samples);
    if let Some([min, median, max, mean]) = report.trajectory_tokens {
        println!("tokens per trajectory: min {min} median {median} max {max} mean {mean:.0}");
    }
    for s in &report.skipped {
        println!("  skipped {}: {}", s.file, s.reason);
    }
    for (reason, n) in &report.rejected {
        println!("  rejected {n}: {reason}");
    }
    println!("{:.1} s ({:.0}% in the sandbox); report: {}", report.seconds,
             100.0 * report.sandbox_seconds / (report.seconds * report.parallel_tasks as f64).max(1e-9),
             a.out.join("report.json").display());
    Ok(())
}
