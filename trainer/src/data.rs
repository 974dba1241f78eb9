//! `trainer data import` and `trainer data inspect`.
use anyhow::{bail, Result};
use datasets::import::{import_dabench, import_rl, import_sft, OnBad};
use datasets::{pack, read_all, Manifest, Overlong, PackConfig, RlTask, Rollout, SampleTokenizer, SftSample, Tokenized, Trajectory};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Convert a published dataset into shards.
    Import(ImportArgs),
    /// Schema, counts, token lengths, packing efficiency and one sample with its loss mask.
    Inspect(InspectArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// DeepAnalyze SFT data: messages lists in .json, .jsonl or .parquet (files or a folder of them).
    DeepanalyzeSft,
    /// The DeepAnalyze RL parquet (prompt, reward_spec, data, workspace_id).
    DeepanalyzeRl,
    /// InfiAgent-DABench: a folder with questions.jsonl, labels.jsonl, tables/.
    Dabench,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    #[arg(long = "from", value_enum)]
    format: Format,
    input: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Skip (and count) bad rows instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// deepanalyze-sft: the ability of every sample (default: each file's name).
    #[arg(long)]
    ability: Option<String>,
    /// deepanalyze-rl: folder of workspaces by workspace_id (default: workspaces/ beside the input).
    #[arg(long)]
    workspaces: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    path: PathBuf,
    /// A checkpoint folder whose tokenizer and template tokenize the samples.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Bin length for the packing estimate.
    #[arg(long, default_value_t = 8192)]
    seq_len: usize,
}

fn sft_files(input: &Path) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "jsonl" | "parquet")))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no .json, .jsonl or .parquet files", input.display());
    }
    Ok(files)
}

/// A spinner with elapsed time on stderr (hidden when not a terminal) for work whose size
/// is known only once it is done.
fn spinner(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner()
        .with_style(indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap())
        .with_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Import(a) => import(a),
        Command::Inspect(a) => inspect(a),
    }
}

fn import(a: ImportArgs) -> Result<()> {
    let on_bad = if a.skip_bad { OnBad::Skip } else { OnBad::Error };
    let bar = spinner(&format!("importing {}", a.input.display()));
    let report = match a.format {
        Format::DeepanalyzeSft => import_sft(&sft_files(&a.input)?, &a.out, a.ability.as_deref(), on_bad)?,
        Format::DeepanalyzeRl => import_rl(&a.input, a.workspaces.as_deref(), &a.out, on_bad)?,
        Format::Dabench => import_dabench(&a.input, &a.out, on_bad)?,
    };
    bar.finish_and_clear();
    println!("wrote {} records to {} ({} skipped)", report.written, a.out.display(), report.skipped);
    for r in &report.skip_reasons {
        println!("  skipped: {r}");
    }
    Ok(())
}

fn histogram(title: &str, lens: &[usize]) {
    if lens.is_empty() {
        return;
    }
    let mut buckets: BTreeMap<u32, usize> = BTreeMap::new();
    for &l in lens {
        *buckets.entry(usize::BITS - l.max(1).leading_zeros()).or_default() += 1;
    }
    let most = *buckets.values().max().unwrap();
    let mut sorted = lens.to_vec();
    sorted.sort();
    println!("{title}: min {} median {} max {} mean {:.0}", sorted[0], sorted[sorted.len() / 2], sorted[sorted.len() - 1],
             lens.iter().sum::<usize>() as f64 / lens.len() as f64);
    for (b, n) in buckets {
        let (lo, hi) = (1usize << (b - 1), (1usize << b) - 1);
        println!("  {lo:>7}..{hi:<7} {n:>7} {}", "#".repeat((n * 40).div_ceil(most)));
    }
}

/// The sample's text with context-only (masked) tokens inside ⟦ ⟧.
fn show_mask(tok: &model::Tokenizer, t: &Tokenized) -> Result<String> {
    let mut out = String::new();
    let mut i = 0;
    while i < t.ids.len() {
        let m = t.mask[i];
        let j = (i..t.ids.len()).find(|&j| t.mask[j] != m).unwrap_or(t.ids.len());
        let text = tok.decode(&t.ids[i..j])?;
        if m == 1 { out += &text } else { out += &format!("⟦{text}⟧") }
        i = j;
    }
    Ok(out)
}

fn counts(title: &str, keys: impl Iterator<Item = String>) {
    let mut c: BTreeMap<String, usize> = BTreeMap::new();
    for k in keys {
        *c.entry(k).or_default() += 1;
    }
    println!("{title}: {}", c.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "));
}

fn inspect(a: InspectArgs) -> Result<()> {
    let m = Manifest::read(&a.path)?;
    println!("{}: {} `{}` records in {} shard(s){}", a.path.display(), m.rows, m.kind, m.shards.len(),
             if m.complete { "" } else { " (INCOMPLETE: the writer did not finish)" });
    println!("schema: {}", m.schema.iter().map(|(n, t)| format!("{n}: {t}")).collect::<Vec<_>>().join(", "));
    let ck = match &a.model {
        Some(dir) => {
            let tok = model::Tokenizer::from_dir(dir)?;
            let template = model::ChatTemplate::from_dir(dir, &tok.config)?;
            Some((tok, template))
        }
        None => None,
    };
    let tokenized = |msgs: Vec<Vec<datasets::Message>>| -> Result<()> {
        let Some((tok, template)) = &ck else {
            println!("(give --model DIR to see token lengths, loss masks and packing)");
            return Ok(());
        };
        let st = SampleTokenizer { tokenizer: tok, template };
        let bar = spinner(&format!("tokenizing {} samples", msgs.len()));
        let toks: Vec<Tokenized> = msgs.par_iter().map(|m| st.messages(m)).collect::<datasets::Result<_>>()?;
        bar.finish_and_clear();
        histogram("tokens per sample", &toks.iter().map(Tokenized::len).collect::<Vec<_>>());
        let trained: usize = toks.iter().map(Tokenized::trained).sum();
        let total: usize = toks.iter().map(Tokenized::len).sum();
        println!("trained tokens: {trained} of {total} ({:.1}%)", 100.0 * trained as f64 / total.max(1) as f64);
        println!("boundary drift (a token across a mask boundary): {} samples", toks.iter().filter(|t| t.boundary_drift).count());
        let (_, r) = pack(&toks, &PackConfig { seq_len: a.seq_len, overlong: Overlong::Truncate, pad_id: 0 });
        println!("packing into {}: {} sequences, efficiency {:.1}%, {} truncated", a.seq_len, r.sequences, 100.0 * r.efficiency, r.truncated);
        if let Some(t) = toks.first() {
            println!("--- sample 0 (⟦context, not trained⟧) ---\n{}", show_mask(tok, t)?);
        }
        Ok(())
    };
    match m.kind.as_str() {
        "sft" => {
            let rows: Vec<SftSample> = read_all(&a.path)?;
            counts("abilities", rows.iter().map(|r| r.ability.clone()));
            tokenized(rows.into_iter().map(|r| r.messages).collect())?;
        }
        "trajectory" => {
            let rows: Vec<Trajectory> = read_all(&a.path)?;
            counts("sources", rows.iter().map(|r| r.source.clone()));
            tokenized(rows.iter().map(Trajectory::messages).collect())?;
        }
        "rl_task" => {
            let rows: Vec<RlTask> = read_all(&a.path)?;
            counts("kinds", rows.iter().map(|r| r.kind.clone()));
            counts("sources", rows.iter().map(|r| r.source.clone()));
            histogram("prompt characters", &rows.iter().map(|r| r.prompt.chars().count()).collect::<Vec<_>>());
            if let Some(r) = rows.first() {
                println!("--- task {} ({}; files {:?} in {}) ---\n{}\nground truth: {}", r.id, r.kind, r.files, r.workspace, r.prompt,
                         r.ground_truth.as_deref().unwrap_or("-"));
            }
        }
        "rollout" => {
            let rows: Vec<Rollout> = read_all(&a.path)?;
            histogram("tokens per rollout", &rows.iter().map(|r| r.token_ids.len()).collect::<Vec<_>>());
            let mean = rows.iter().map(|r| r.reward as f64).sum::<f64>() / rows.len().max(1) as f64;
            println!("mean reward {mean:.3}");
        }
        other => bail!("{}: unknown record kind `{other}`", a.path.display()),
    }
    Ok(())
}
