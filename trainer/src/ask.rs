//! `trainer ask --model DIR --files F... --question TEXT`: a checkpoint analyzes data files
//! the way it was trained to: the DeepAnalyze prompt (file names and sizes), `<Code>` cells
//! run in a sandbox workspace holding copies of the files, observations fed back, until
//! `<Answer>`. Prints the trajectory; `--out` keeps the files the cells wrote.
use anyhow::{bail, Context, Result};
use crate::rollout_args::RolloutArgs;
use model::{Checkpoint, DefaultBackend as B};
use sandbox::{Sandbox, SandboxConfig};
use std::collections::BTreeSet;
use std::path::PathBuf;
use trainer::rollout;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// The data files (csv, xlsx, sqlite, json, ...): copied into the workspace by name.
    #[arg(long, required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    #[arg(long)]
    question: String,
    /// Copy the files the cells wrote (reports, figures, cleaned tables) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    rollout: RolloutArgs,
    /// Print {"prompt", "text", "answer", "cells", "failed_cells", "finished", "files_written"}.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    // The files go into one folder by name, as the prompt lists them.
    let mut names = BTreeSet::new();
    let mut listed = vec![];
    for f in &a.files {
        let meta = std::fs::metadata(f).with_context(|| format!("--files {}", f.display()))?;
        if !meta.is_file() {
            bail!("--files {}: not a file", f.display());
        }
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !names.insert(name.clone()) {
            bail!("--files: two files are named {name}; the model sees files by name");
        }
        listed.push((name, meta.len()));
    }
    let mut ck = Checkpoint::<B>::load(&a.model, &Default::default())?;
    ck.model = ck.model.for_generation(a.rollout.precision);
    let (tok, template, eos) = (ck.tokenizer()?, ck.chat_template()?, ck.eos_token_ids());
    let staged = tempfile::tempdir().context("a staging folder")?;
    for (f, (name, _)) in a.files.iter().zip(&listed) {
        std::fs::copy(f, staged.path().join(name)).with_context(|| format!("--files {}", f.display()))?;
    }
    let prompt = datasets::import::deepanalyze_prompt(&a.question, &listed);
    let task = rollout::posed_task("ask", prompt.clone(), listed.iter().map(|(n, _)| n.clone()).collect());
    let sandbox = Sandbox::new(SandboxConfig { workers: 1, ..SandboxConfig::default() })?;
    let cfg = a.rollout.config(a.temperature, a.seed, None);
    let env = rollout::Env { model: &ck.model, tok, template: &template, eos: &eos, sandbox: &sandbox };
    let spinner = trainer::sft::spinner("the model is analyzing (cells run in the sandbox)");
    let (mut trajs, _) = rollout::run(&env, &[&task], &[staged.path().to_path_buf()], 1, &cfg, |_| {})?;
    spinner.finish_and_clear();
    let t = trajs.remove(0);
    let written = match (&a.out, &t.workspace) {
        (Some(out), Some(ws)) => rollout::copy_outputs(ws, staged.path(), out)?,
        _ => vec![],
    };
    if a.json {
        let answer = trainer::reward::answer_block(&t.text).map(str::trim);
        println!("{}", serde_json::json!({"prompt": prompt, "text": t.text, "answer": answer, "cells": t.cells(),
                                          "failed_cells": t.failed_cells, "finished": t.finished, "files_written": written}));
    } else {
        println!("{}", t.text);
        if !t.finished {
            eprintln!("(stopped before an answer: --max-turns {} or --max-new-tokens {} ran out)", a.rollout.max_turns, a.rollout.max_new_tokens);
        }
        for f in &written {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}
