//! The SFT stages, top to bottom: load the mixture, get the model (resume, an HF folder,
//! or from scratch with a trained tokenizer), tokenize, then step: draw documents up to
//! the token budget, pack them, take one AdamW step, log, evaluate, checkpoint. Ends with
//! the final HF folder, `outcome.json` and the plots.
use crate::metrics::Metrics;
use crate::run_ckpt::{self, RunState};
use crate::stage_config::{lr_at, StageConfig};
use crate::step::{eval_loss, Optim};
use anyhow::{anyhow, bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use curriculum::{Sample, StageKind, StageOutcome};
use datasets::{pack, Loader, Overlong, PackConfig, PackedSeq, SampleTokenizer, Source, Tokenized};
use indicatif::{ProgressBar, ProgressStyle};
use model::{ChatTemplate, Checkpoint, DefaultBackend, Qwen3, Qwen3Config, Tokenizer};
use rayon::prelude::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub type TrainBackend = Autodiff<DefaultBackend>;

/// `--resume`: `auto` continues from the newest complete checkpoint of the run folder,
/// `never` starts over, a path resumes from that checkpoint.
#[derive(Debug, Clone)]
pub enum Resume {
    Auto,
    Never,
    From(PathBuf),
}

impl Resume {
    pub fn parse(s: &str) -> Self {
        match s {
            "auto" => Resume::Auto,
            "never" => Resume::Never,
            p => Resume::From(PathBuf::from(p)),
        }
    }

    /// The checkpoint a run in `out` continues from, if any.
    pub fn checkpoint(&self, out: &Path) -> Option<PathBuf> {
        match self {
            Resume::Never => None,
            Resume::Auto => run_ckpt::complete(out).pop(),
            Resume::From(p) => Some(p.clone()),
        }
    }
}

/// Runs one SFT stage; `init` (from the curriculum) replaces the config's model source.
pub fn run(kind: StageKind, cfg: &StageConfig, cfg_path: &Path, init: Option<&Path>, resume: &Resume) -> Result<StageOutcome> {
    let out = &cfg.out;
    // Across machines (`cluster`) every rank runs this with the same config; rank 0 alone
    // writes the run folder.
    let primary = crate::cluster::primary();
    crate::cluster::check_same("stage config", &toml::to_string(cfg)?)?;
    let outcome_path = out.join("outcome.json");
    if matches!(resume, Resume::Auto) && outcome_path.exists() {
        eprintln!("{}: finished earlier ({}); skipping", kind.name(), outcome_path.display());
        return Ok(serde_json::from_str(&std::fs::read_to_string(&outcome_path)?)?);
    }
    if primary {
        std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
        std::fs::write(out.join("config.toml"), toml::to_string(cfg)?)?;
    }
    let devices = cfg.compute.devices(cfg_path)?;
    let device = devices[0].clone();
    let split = cfg.data.load()?;

    let resume_dir = resume.checkpoint(out);
    crate::cluster::check_same("checkpoint to resume from", &format!("{resume_dir:?}"))?;
    let (ck, state) = match &resume_dir {
        Some(dir) => (Checkpoint::<TrainBackend>::load(dir, &device)?, Some(run_ckpt::read_state(dir)?)),
        None => (crate::cluster::primary_first(|| source_model(cfg, cfg_path, init, &split, &device))?, None),
    };
    let source_dtype = if state.is_some() { original_dtype(out).unwrap_or(ck.config.dtype.clone()) } else { ck.config.dtype.clone() };
    if primary {
        std::fs::write(out.join("source_dtype"), &source_dtype)?;
    }
    let tok = ck.tokenizer()?;
    if tok.deepanalyze_tag_ids().is_none() {
        bail!("{}: the tokenizer lacks the DeepAnalyze tags (<Analyze> ... </Answer>); set model.add_tags = true \
               or start from a folder made by `trainer init-model`", ck.dir.join("tokenizer.json").display());
    }
    if ck.model.vocab_size() < tok.len() {
        bail!("{}: the model has {} embedding rows but the tokenizer {} ids", ck.dir.display(), ck.model.vocab_size(), tok.len());
    }
    let template = ck.chat_template()?;

    // Tokenize every sample once (rayon), then serve them through the resumable loader.
    let pad = pad_id(tok);
    let overlong = if cfg.batch.overlong == "drop" { Overlong::Drop } else { Overlong::Truncate };
    let bar = spinner("tokenizing");
    let mut sources = vec![];
    let mut dropped = 0;
    for (name, weight, samples) in &split.train {
        let (items, d) = tokenize_all(samples, tok, &template, cfg.batch.seq_len, overlong)?;
        dropped += d;
        if items.is_empty() {
            bail!("{name}: no sample fits batch.seq_len = {} with a trained token", cfg.batch.seq_len);
        }
        sources.push(Source { name: name.clone(), items, weight: *weight });
    }
    let (heldout, _) = tokenize_all(&split.heldout, tok, &template, cfg.batch.seq_len, overlong)?;
    bar.finish_and_clear();
    let eval_seqs = eval_set(heldout, cfg, pad);
    let train_tokens: usize = sources.iter().flat_map(|s| &s.items).map(|t| t.len()).sum();
    let total_steps = total_steps(cfg, train_tokens);
    eprintln!(
        "{}: {} training samples ({} tokens, {} dropped as overlong), {} held-out sequences, {} steps of ≤{} tokens; compute {}",
        kind.name(), sources.iter().map(|s| s.items.len()).sum::<usize>(), train_tokens, dropped, eval_seqs.len(), total_steps, cfg.batch.batch_tokens, cfg.compute
    );

    let mut loader = Loader::new(sources, cfg.seed);
    if cfg.data.order == curriculum::Order::Difficulty {
        loader = loader.ordered_first_epoch();
    }
    let mut optim = Optim::<TrainBackend>::new(&cfg.optim);
    let mut state = match state {
        Some(s) => {
            if s.total_steps != total_steps || s.seed != cfg.seed {
                bail!("{}: the checkpoint is of a run with {} steps and seed {}, this config gives {} and {}; use --resume never",
                      resume_dir.unwrap().display(), s.total_steps, s.seed, total_steps, cfg.seed);
            }
            loader.seek(s.cursor.clone());
            eprintln!("{}: resumed at step {} from {}", kind.name(), s.step, resume_dir.as_ref().unwrap().display());
            RunState { devices: cfg.compute.devices, ..s }
        }
        None => RunState { step: 0, total_steps, cursor: loader.cursor().clone(), seed: cfg.seed, tokens: 0, first_eval_loss: None, devices: cfg.compute.devices },
    };
    let Checkpoint { config, model, tokenizer, .. } = ck;
    let tok = tokenizer.expect("checked above");
    // With data parallel each parameter lives on the device that owns it (`parallel`).
    let mut model = crate::parallel::shard(model.with_stable_ids().with_compute(cfg.compute.model()), &devices);
    if let Some(dir) = &resume_dir {
        optim = optim.load(dir, &model, &devices)?; // keyed by the stable ids, sharded by owner
    }
    let scratch = tempfile::tempdir()?; // (the metrics of a rank other than 0)
    let mut metrics = Metrics::open(if primary { out } else { scratch.path() }, state.step)?;
    let evaluate = |model: &Qwen3<TrainBackend>| eval_loss(model, &eval_seqs, cfg.batch.micro_batch, &devices);
    let bar = if primary { ProgressBar::new(total_steps) } else { ProgressBar::hidden() }.with_position(state.step);
    bar.set_style(ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} ETA {eta}").unwrap());
    bar.set_prefix(kind.name());
    // On CUDA a process's first forward and step compile and autotune their kernels
    // (minutes on a fresh machine; kept on disk for later runs): say so, not a still bar.
    let gpu_note = if model::ON_GPU { " (first use on this machine: compiling and autotuning GPU kernels, minutes)" } else { "" };
    if state.step == 0 {
        bar.set_message(format!("held-out loss{gpu_note}"));
        state.first_eval_loss = evaluate(&model);
        if let Some(l) = state.first_eval_loss {
            metrics.log(json!({"step": 0, "eval_loss": l}))?;
        }
    }
    bar.set_message(format!("first step{gpu_note}"));
    let mut last_eval = None;
    while state.step < total_steps {
        let (t0, c0) = (Instant::now(), crate::cluster::seconds());
        let (seqs, picks) = next_batch(&mut loader, cfg, pad);
        let mbs: Vec<&[PackedSeq]> = seqs.chunks(cfg.batch.micro_batch).collect();
        let lr = lr_at(&cfg.optim, state.step, total_steps);
        let (m, stats) = optim.step(model, &mbs, lr, &devices);
        model = m;
        let stats = stats.map_err(|e| {
            let ids: Vec<String> = picks.iter().map(|&(s, i)| format!("{}#{}", loader.source_name(s), i)).collect();
            anyhow!("step {}: {} is {} (micro-batch {:?} of {}); the step's samples: {}; last checkpoint kept, lower optim.lr or check these samples",
                    state.step + 1, e.what, e.value, e.micro_batch, mbs.len(), ids.join(", "))
        })?;
        state.step += 1;
        state.tokens += stats.trained_tokens as u64;
        state.cursor = loader.cursor().clone();
        let secs = t0.elapsed().as_secs_f64();
        let real: usize = seqs.iter().map(PackedSeq::real_tokens).sum();
        let mut row = json!({"step": state.step, "loss": stats.loss, "lr": stats.lr, "grad_norm": stats.grad_norm,
                             "trained_tokens": stats.trained_tokens, "tokens_per_s": real as f64 / secs, "step_s": secs});
        if let (Some(c0), Some(c1)) = (c0, crate::cluster::seconds()) {
            row["cluster_s"] = json!(c1 - c0);
        }
        metrics.log(row)?;
        bar.set_message(format!("loss {:.4} lr {:.2e} {:.0} tok/s", stats.loss, lr, real as f64 / secs));
        bar.set_position(state.step);
        let last = state.step == total_steps;
        if last || (cfg.eval.every > 0 && state.step % cfg.eval.every == 0) {
            if let Some(l) = evaluate(&model) {
                metrics.log(json!({"step": state.step, "eval_loss": l}))?;
                bar.println(format!("{} step {}: held-out loss {l:.4}", kind.name(), state.step));
                last_eval = Some(l);
            }
        }
        if let Err(e) = run_ckpt::after_step(kind.name(), out, &model, &config, &tok, &optim, &state, &cfg.checkpoint, last) {
            bar.abandon();
            return Err(e);
        }
    }
    bar.finish();
    if last_eval.is_none() {
        last_eval = evaluate(&model);
    }
    let final_dir = out.join("final");
    let outcome = StageOutcome { kind, final_dir, first_eval_loss: state.first_eval_loss, last_eval_loss: last_eval, steps: state.step, first_success: None, last_success: None };
    crate::cluster::primary_only(|| -> Result<()> {
        run_ckpt::write_atomic(&outcome.final_dir, &model, &config, &tok, &source_dtype, |_| Ok(()))?;
        crate::plots::write(out, &metrics)?;
        Ok(std::fs::write(&outcome_path, serde_json::to_string_pretty(&outcome)?)?)
    })?;
    eprintln!("{}: done: {} steps, held-out loss {:?} → {:?}; model in {}", kind.name(), outcome.steps,
              outcome.first_eval_loss, outcome.last_eval_loss, outcome.final_dir.display());
    Ok(outcome)
}


fn original_dtype(out: &Path) -> Option<String> {
    std::fs::read_to_string(out.join("source_dtype")).ok()
}

/// A spinner with `msg` on stderr (hidden when it is not a terminal).
pub fn spinner(msg: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(msg.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

fn pad_id(tok: &Tokenizer) -> u32 {
    ["pad_token", "eos_token"].iter().find_map(|k| tok.special_token(k).and_then(|t| tok.token_to_id(&t))).unwrap_or(0)
}

/// The stage's optimizer steps: `train.max_steps`, or epochs over the training tokens.
pub fn total_steps(cfg: &StageConfig, train_tokens: usize) -> u64 {
    cfg.train.max_steps.unwrap_or(((cfg.train.epochs * train_tokens as f64) / cfg.batch.batch_tokens as f64).ceil().max(1.0) as u64)
}

/// Tokenizes in parallel; drops samples with nothing to train, handles overlong ones.
pub fn tokenize_all(samples: &[Sample], tok: &Tokenizer, template: &ChatTemplate, seq_len: usize, overlong: Overlong) -> Result<(Vec<Tokenized>, usize)> {
    let st = SampleTokenizer { tokenizer: tok, template };
    let all: Vec<Tokenized> = samples
        .par_iter()
        .map(|s| st.messages(&s.messages()).map_err(|e| anyhow!("sample {}: {e}", s.id())))
        .collect::<Result<_>>()?;
    let mut dropped = 0;
    let mut out = vec![];
    for mut t in all {
        if t.len() > seq_len {
            if overlong == Overlong::Drop {
                dropped += 1;
                continue;
            }
            t.ids.truncate(seq_len);
            t.mask.truncate(seq_len);
        }
        if t.trained() > 0 {
            out.push(t);
        }
    }
    Ok((out, dropped))
}

/// The held-out documents packed once, capped at `eval.max_tokens`.
fn eval_set(docs: Vec<Tokenized>, cfg: &StageConfig, pad: u32) -> Vec<PackedSeq> {
    let mut budget = cfg.eval.max_tokens;
    let docs: Vec<Tokenized> = docs.into_iter().take_while(|d| budget.checked_sub(d.len()).map(|b| budget = b).is_some()).collect();
    pack(&docs, &PackConfig { seq_len: cfg.batch.seq_len, overlong: Overlong::Truncate, pad_id: pad }).0
}

/// Documents for one step: drawn until the next would exceed `batch_tokens` (it is put
/// back for the next step), packed into `seq_len` sequences.
fn next_batch(loader: &mut Loader<Tokenized>, cfg: &StageConfig, pad: u32) -> (Vec<PackedSeq>, Vec<(usize, usize)>) {
    let (mut docs, mut picks, mut total) = (vec![], vec![], 0);
    loop {
        let before = loader.cursor().clone();
        let (s, i) = loader.next_index();
        let doc = &loader.items(s)[i];
        if !docs.is_empty() && total + doc.len() > cfg.batch.batch_tokens {
            loader.seek(before);
            break;
        }
        total += doc.len();
        docs.push(doc.clone());
        picks.push((s, i));
    }
    let (seqs, _) = pack(&docs, &PackConfig { seq_len: cfg.batch.seq_len, overlong: Overlong::Truncate, pad_id: pad });
    (seqs, picks)
}

/// The weights a fresh run starts from.
fn source_model(cfg: &StageConfig, cfg_path: &Path, init: Option<&Path>, split: &curriculum::Split, device: &burn::tensor::Device<TrainBackend>) -> Result<Checkpoint<TrainBackend>> {
    let m = &cfg.model;
    if let Some(dir) = init.or(m.init.as_deref()) {
        let mut ck = Checkpoint::<TrainBackend>::load(dir, device).with_context(|| format!("{}: model.init", cfg_path.display()))?;
        if m.add_tags {
            ck.add_deepanalyze_tags()?;
        }
        return Ok(ck);
    }
    let arch = m.arch.as_ref().expect("validated: init or arch");
    let init_dir = cfg.out.join("init");
    if !init_dir.join("config.json").exists() {
        let tok = match &m.tokenizer {
            Some(dir) => {
                let mut t = Tokenizer::from_dir(dir)?;
                if m.add_tags {
                    t.add_deepanalyze_tags();
                }
                t
            }
            None => train_tokenizer(cfg, split)?,
        };
        let mut config = Qwen3Config::from_file(arch).with_context(|| format!("{}: model.arch", cfg_path.display()))?;
        config.vocab_size = tok.len();
        config.set_special_token_ids(&tok);
        <DefaultBackend as Backend>::seed(&Default::default(), cfg.seed);
        let model = Qwen3::<DefaultBackend>::init(&config, &Default::default());
        let ck = Checkpoint { dir: init_dir.clone(), config, model, tokenizer: Some(tok) };
        ck.save(&init_dir, model::DEFAULT_MAX_SHARD_BYTES)?;
        eprintln!("from scratch: {} parameters, vocabulary {} → {}", burn::module::Module::num_params(&ck.model), ck.config.vocab_size, init_dir.display());
    }
    Ok(Checkpoint::<TrainBackend>::load(&init_dir, device)?)
}

/// A byte-level BPE tokenizer trained on the corpus shards (default: the training split).
pub fn train_tokenizer(cfg: &StageConfig, split: &curriculum::Split) -> Result<Tokenizer> {
    let bar = spinner("training the BPE tokenizer");
    let texts: Vec<String> = if cfg.model.tokenizer_corpus.is_empty() {
        split.train.iter().flat_map(|(_, _, s)| s.iter().map(Sample::text)).collect()
    } else {
        let mut v = vec![];
        for p in &cfg.model.tokenizer_corpus {
            v.extend(curriculum::mixture::read_samples(p)?.iter().filter(|s| !curriculum::heldout(s.task_key(), cfg.data.heldout)).map(Sample::text));
        }
        v
    };
    let tok = Tokenizer::train_bpe(texts.iter(), cfg.model.tokenizer_vocab)?;
    bar.finish_and_clear();
    Ok(tok)
}
