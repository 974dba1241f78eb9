//! `trainer eval --model DIR --tasks SHARDS`: multi-turn rollouts of a checkpoint on RL
//! task shards (the synthesizer's or imported ones) in the sandbox, and the share of
//! tasks whose trajectory is well formed, whose code runs, and whose answer is right.
use anyhow::{Context, Result};
use model::{Checkpoint, DefaultBackend as B, SamplingConfig};
use sandbox::{Sandbox, SandboxConfig};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use trainer::rollout::{self, RolloutConfig};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// A shard folder of `rl_task` records (workspaces relative to it).
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
    #[arg(long, default_value_t = 8)]
    max_turns: usize,
    /// Tokens per turn.
    #[arg(long, default_value_t = 768)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: Args) -> Result<()> {
    let ck = Checkpoint::<B>::load(&a.model, &Default::default())?;
    let tok = ck.tokenizer()?;
    let template = ck.chat_template()?;
    let mut tasks = datasets::read_all::<datasets::RlTask>(&a.tasks)?;
    if let Some(f) = a.heldout {
        tasks.retain(|t| curriculum::heldout(&t.id, f));
    }
    tasks.truncate(a.limit.unwrap_or(usize::MAX));
    anyhow::ensure!(!tasks.is_empty(), "{}: no tasks to evaluate (after --heldout/--limit)", a.tasks.display());
    let sandbox = Sandbox::new(SandboxConfig { workers: 2, ..SandboxConfig::default() })?;
    let cfg = RolloutConfig {
        max_turns: a.max_turns,
        max_new_tokens: a.max_new_tokens,
        sampling: SamplingConfig { temperature: a.temperature, seed: a.seed, ..SamplingConfig::default() },
    };
    let bar = indicatif::ProgressBar::new(tasks.len() as u64).with_message("rollouts");
    bar.set_style(indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} ETA {eta}").unwrap());
    let rollouts = rollout::run(&ck.model, tok, &template, &ck.eos_token_ids(), &sandbox, &tasks, &a.tasks, &cfg, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let n = rollouts.len() as f64;
    let share = |f: &dyn Fn(&rollout::Rollout) -> bool| rollouts.iter().filter(|r| f(r)).count() as f64 / n;
    let ran = |r: &rollout::Rollout| r.cells > 0 && r.failed_cells == 0;
    let graded: Vec<bool> = rollouts.iter().filter_map(|r| r.correct).collect();
    let summary = json!({
        "model": a.model, "tasks": rollouts.len(),
        "well_formed": share(&|r| r.well_formed),
        "code_ran": share(&ran),
        "well_formed_and_ran": share(&|r| r.well_formed && ran(r)),
        "cell_success_rate": rollouts.iter().map(|r| r.cells - r.failed_cells).sum::<usize>() as f64 / rollouts.iter().map(|r| r.cells).sum::<usize>().max(1) as f64,
        "correct": (!graded.is_empty()).then(|| graded.iter().filter(|&&c| c).count() as f64 / graded.len() as f64),
        "mean_cells": rollouts.iter().map(|r| r.cells).sum::<usize>() as f64 / n,
    });
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
        std::fs::write(out.join("eval.json"), serde_json::to_string_pretty(&summary)?)?;
        let mut f = std::fs::File::create(out.join("rollouts.jsonl"))?;
        for r in &rollouts {
            writeln!(f, "{}", serde_json::to_string(r)?)?;
        }
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
