//! `trainer eval --model DIR --tasks SHARDS|DABENCH_DIR`: multi-turn rollouts of a
//! checkpoint, code run in the sandbox, on RL task shards (the synthesizer's or imported
//! ones) or a DABench folder; the share of tasks whose trajectory is well formed, whose
//! code runs, and whose answer (the `<Answer>` block's) is right. Launched as ranks
//! (`WORLD_SIZE`, ..., see `trainer::cluster`), the machines share the tasks out and rank 0
//! writes and prints the result.
use anyhow::{Context, Result};
use crate::rollout_args::RolloutArgs;
use model::{Checkpoint, DefaultBackend as B};
use sandbox::{Sandbox, SandboxConfig};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use trainer::evaluate;
use trainer::rollout;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// A shard folder of `rl_task` records (workspaces relative to it), or a DABench-style
    /// folder (questions.jsonl, labels.jsonl, tables/), imported on the fly.
    #[arg(long)]
    tasks: PathBuf,
    /// Write eval.json and rollouts.jsonl here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only the tasks held out from training at this fraction (the stage configs' data.heldout).
    #[arg(long)]
    heldout: Option<f64>,
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Rollouts per task (sampled: needs --temperature > 0); the summary adds pass@k.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    rollout: RolloutArgs,
    /// GPUs 0..N-1 of the machine, each generating a share of the tasks.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Rollouts decoded together per device (bounds the KV cache: a device's tasks run in
    /// waves of max_rows / samples tasks, at least one).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_rows: u64,
}

pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(a.samples == 1 || a.temperature > 0.0, "--samples {} needs --temperature above 0 (greedy rollouts of a task are all the same)", a.samples);
    let devices = model::devices(a.devices).map_err(|e| anyhow::anyhow!("--devices {}: {e}", a.devices))?;
    trainer::cluster::join_from_env()?;
    let primary = trainer::cluster::primary();
    let mut ck = Checkpoint::<B>::load(&a.model, &devices[0])?;
    ck.model = ck.model.for_generation(a.rollout.precision);
    let tok = ck.tokenizer()?;
    let template = ck.chat_template()?;
    // A DABench folder becomes task shards in a temporary folder first.
    let imported = a.tasks.join("questions.jsonl").exists().then(|| std::env::temp_dir().join(format!("trainer-eval-{}", std::process::id())));
    let _cleanup = imported.clone().map(RemoveOnDrop);
    let shard_dir = match &imported {
        Some(dir) => {
            datasets::import::import_dabench(&a.tasks, dir, datasets::import::OnBad::Error)?;
            dir.clone()
        }
        None => a.tasks.clone(),
    };
    let mut tasks = datasets::read_all::<datasets::RlTask>(&shard_dir)?;
    if let Some(f) = a.heldout {
        tasks.retain(|t| curriculum::heldout(&t.id, f));
    }
    tasks.truncate(a.limit.unwrap_or(usize::MAX));
    anyhow::ensure!(!tasks.is_empty(), "{}: no tasks to evaluate (after --heldout/--limit)", a.tasks.display());
    let sandbox = Sandbox::new(SandboxConfig { workers: 2, ..SandboxConfig::default() })?;
    let cfg = a.rollout.config(a.temperature, a.seed, Some(a.max_rows as usize));
    let len = tasks.len() as u64 * a.samples;
    let bar = if primary { indicatif::ProgressBar::new(len) } else { indicatif::ProgressBar::hidden() }.with_message("rollouts");
    bar.set_style(indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} ETA {eta}").unwrap());
    let with_dirs: Vec<_> = tasks.iter().map(|t| (t, rollout::workspace_dir(t, &shard_dir))).collect();
    let eos = ck.eos_token_ids();
    let env = rollout::Env { model: &ck.model, tok, template: &template, eos: &eos, sandbox: &sandbox };
    let (records, summary) = evaluate::run(&env, &devices, &with_dirs, a.samples as usize, &cfg, trainer::reward::RewardSpec::default().numeric_tol, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    if !primary {
        return Ok(());
    }
    let mut shown = serde_json::to_value(&summary)?;
    shown["model"] = json!(a.model);
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
        std::fs::write(out.join("eval.json"), serde_json::to_string_pretty(&shown)?)?;
        let mut f = std::fs::File::create(out.join("rollouts.jsonl"))?;
        for r in &records {
            writeln!(f, "{}", serde_json::to_string(r)?)?;
        }
        trainer::plots::write_eval(out, &summary.pass_at)?;
    }
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
