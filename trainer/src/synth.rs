//! `trainer synth`: real tables in, verified single-ability samples, trajectories and RL
//! tasks out (parquet shards), with a statistics report. The Solver is the built-in
//! expert, an OpenAI-compatible endpoint, or a local checkpoint (`--teacher local`:
//! rejection sampling through the rollout engine, the Inspector keeping the first attempt
//! it accepts).
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use crate::rollout_args::RolloutArgs;
use model::{Checkpoint, ChatTemplate, DefaultBackend as B, Qwen3, Tokenizer};
use sandbox::{Sandbox, SandboxConfig};
use std::path::PathBuf;
use synth::solver::Solved;
use synth::{BatchSolver, Posed, SynthConfig};
use trainer::rollout::{self, RolloutConfig};

#[derive(Clone, Copy, clap::ValueEnum)]
enum Teacher {
    /// Built-in expert policies acting in the sandbox.
    Expert,
    /// An OpenAI-compatible chat endpoint (--base-url, --teacher-model, key from --api-key-env).
    Openai,
    /// The checkpoint given by --model, through the rollout engine (--samples attempts a task).
    Local,
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
    /// A checkpoint folder whose tokenizer measures the trajectories' token lengths (and,
    /// with --teacher local, that solves the tasks).
    #[arg(long)]
    model: Option<PathBuf>,
    /// --teacher local: attempts per task (sampled; the first the Inspector accepts is kept).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    /// --teacher local: sampling temperature (0: greedy, one attempt is enough).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// --teacher local: the rollouts' limits and precision.
    #[command(flatten)]
    rollout: RolloutArgs,
    /// --teacher local: GPUs 0..N-1, each solving a share of the tasks.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// --teacher local: attempts decoded together per device (bounds the KV cache: the
    /// tasks run in waves of max_rows / samples, at least one).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_rows: u64,
    /// The sandbox's Python (default: $DEEPANALYZE_SANDBOX_PYTHON, else .venv-sandbox/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if a.paraphrase && !matches!(a.teacher, Teacher::Openai) {
        bail!("--paraphrase needs --teacher openai (the endpoint rephrases the tasks)");
    }
    let teacher = match a.teacher {
        Teacher::Expert | Teacher::Local => None,
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
    let local = match (a.teacher, &a.model) {
        (Teacher::Local, None) => bail!("--teacher local needs --model DIR (the checkpoint that solves the tasks)"),
        (Teacher::Local, Some(dir)) => Some(Local::load(dir, &a)?),
        _ => None,
    };
    let mut cfg = SandboxConfig::default();
    if let Some(p) = a.python.clone() {
        cfg.python = p;
    }
    let sandbox = Sandbox::new(cfg)?;
    let bar = ProgressBar::new(a.tasks as u64)
        .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} tasks solved and inspected ({per_sec}, eta {eta})").unwrap());
    let cfg = SynthConfig { tables: a.tables, out: a.out.clone(), tasks: a.tasks, seed: a.seed, error_rate: a.error_rate, teacher, tokenizer: a.model.clone(), paraphrase: a.paraphrase };
    let report = synth::synthesize_with(&cfg, &sandbox, local.as_ref().map(|l| l as &dyn BatchSolver), &|done, total| {
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
    if report.attempts > report.posed - report.ground_truth_failed {
        println!("{} attempts inspected (several a task), turned down:", report.attempts);
        for (reason, n) in &report.attempts_rejected {
            println!("  {n}: {reason}");
        }
    }
    println!("{:.1} s ({:.0}% in the sandbox); report: {}", report.seconds,
             100.0 * report.sandbox_seconds / (report.seconds * report.parallel_tasks as f64).max(1e-9),
             a.out.join("report.json").display());
    Ok(())
}

/// A local checkpoint as the Solver: every task's attempts decoded together by the rollout
/// engine (as RL and `trainer eval` run them), each in its own workspace.
struct Local {
    model: Qwen3<B>,
    tok: Tokenizer,
    template: ChatTemplate,
    eos: Vec<u32>,
    devices: Vec<burn::tensor::Device<B>>,
    samples: usize,
    cfg: RolloutConfig,
    source: String,
}

impl Local {
    fn load(dir: &std::path::Path, a: &Args) -> Result<Self> {
        let devices = model::devices(a.devices).map_err(|e| anyhow::anyhow!("--devices {}: {e}", a.devices))?;
        let ck = Checkpoint::<B>::load(dir, &devices[0])?;
        let (tok, template, eos) = (ck.tokenizer()?.clone(), ck.chat_template()?, ck.eos_token_ids());
        let cfg = a.rollout.config(a.temperature, a.seed, Some(a.max_rows as usize));
        let name = dir.file_name().map_or("checkpoint".into(), |n| n.to_string_lossy().into_owned());
        Ok(Self { model: ck.model.for_generation(a.rollout.precision), tok, template, eos, devices, samples: a.samples as usize, cfg, source: format!("synth-local:{name}") })
    }
}

impl BatchSolver for Local {
    fn solve(&self, tasks: &[Posed], sandbox: &Sandbox) -> std::result::Result<Vec<Vec<(Solved, sandbox::Workspace)>>, String> {
        let rl: Vec<datasets::RlTask> = tasks.iter().map(|t| rollout::posed_task(t.id, t.prompt.clone(), t.files.clone())).collect();
        let refs: Vec<&datasets::RlTask> = rl.iter().collect();
        let dirs: Vec<PathBuf> = tasks.iter().map(|t| t.tables.to_path_buf()).collect();
        let env = rollout::Env { model: &self.model, tok: &self.tok, template: &self.template, eos: &self.eos, sandbox };
        let bar = ProgressBar::new((tasks.len() * self.samples) as u64)
            .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} attempts written ({per_sec}, eta {eta})").unwrap());
        let (trajs, _) = rollout::run_on_devices(&env, &self.devices, &refs, &dirs, self.samples, &self.cfg, |n| bar.inc(n as u64)).map_err(|e| e.to_string())?;
        bar.finish_and_clear();
        let mut out: Vec<Vec<(Solved, sandbox::Workspace)>> = tasks.iter().map(|_| vec![]).collect();
        for mut t in trajs {
            let Some(ws) = t.workspace.take() else { continue };
            let cells = t.code_cells();
            let solved = Solved { recovered_error: cells.iter().any(|(_, o)| o.starts_with("[Error]")), response: t.text, cells, sandbox_secs: t.sandbox_secs };
            out[t.task].push((solved, ws));
        }
        Ok(out)
    }

    fn source(&self) -> &str {
        &self.source
    }
}

