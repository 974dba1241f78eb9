//! Stage 3, top to bottom: load the RL tasks (the held-out split kept apart), the policy
//! (resume or the previous stage's model) and, with a KL term, a frozen reference; then
//! per step: draw tasks, roll out `group_size` samples of each in the sandbox, score them,
//! compute group advantages, take the GRPO update(s), log, checkpoint; evaluate on the
//! held-out tasks before, every `eval.every` steps and after. Ends with the final HF
//! folder, `outcome.json` and the plots.
use crate::evaluate;
use crate::grpo::{self, GrpoSpec, LossStats, TokenTerms};
use crate::metrics::Metrics;
use crate::reward::{self, Parts};
use crate::rl_config::RlConfig;
use crate::rollout::{self, Env, RolloutConfig, Trajectory};
use crate::run_ckpt::{self, RunState};
use crate::sft::{Resume, TrainBackend};
use crate::stage_config::lr_at;
use crate::step::{trained_logprobs, trained_loss_streamed, Optim};
use anyhow::{anyhow, bail, Context, Result};
use burn::module::Module;
use burn::optim::GradientsParams;
use curriculum::{StageKind, StageOutcome};
use datasets::{Loader, PackedSeq, RlTask, ShardWriter, Source};
use indicatif::{ProgressBar, ProgressStyle};
use model::{Checkpoint, DefaultBackend, Qwen3, SamplingConfig};
use rayon::prelude::*;
use sandbox::{Sandbox, SandboxConfig};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs the RL stage; `init` (from the curriculum) replaces `model.init`.
pub fn run(cfg: &RlConfig, cfg_path: &Path, init: Option<&Path>, resume: &Resume) -> Result<StageOutcome> {
    let out = &cfg.out;
    // Across machines (`cluster`) every rank runs this with the same config; rank 0 alone
    // writes the run folder.
    let primary = crate::cluster::primary();
    crate::cluster::check_same("stage config", &toml::to_string(cfg)?)?;
    let outcome_path = out.join("outcome.json");
    if matches!(resume, Resume::Auto) && outcome_path.exists() {
        eprintln!("rl: finished earlier ({}); skipping", outcome_path.display());
        return Ok(serde_json::from_str(&std::fs::read_to_string(&outcome_path)?)?);
    }
    if primary {
        std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
        std::fs::write(out.join("config.toml"), toml::to_string(cfg)?)?;
    }
    let weights = cfg.reward.resolved().map_err(|e| anyhow!("{}: {e}", cfg_path.display()))?;
    let (mut train, mut heldout) = load_tasks(cfg)?;
    let kinds: std::collections::BTreeSet<&str> = train.iter().chain(&heldout).map(|(t, _)| t.kind.as_str()).collect();
    cfg.reward.check_judge(kinds).map_err(|e| anyhow!("{}: {e}", cfg_path.display()))?;
    let devices = cfg.compute.devices(cfg_path)?;
    let device = devices[0].clone();

    let resume_dir = resume.checkpoint(out);
    crate::cluster::check_same("checkpoint to resume from", &format!("{resume_dir:?}"))?;
    // Rollouts sample per device, every rank's (`rollout::run_on_devices`).
    let all_devices = devices.len() * crate::cluster::get().map_or(1, |c| c.world);
    let init_dir = init.unwrap_or(&cfg.model.init).to_path_buf();
    let ck = match &resume_dir {
        Some(dir) => Checkpoint::<TrainBackend>::load(dir, &device)?,
        None => Checkpoint::<TrainBackend>::load(&init_dir, &device).with_context(|| format!("{}: model.init", cfg_path.display()))?,
    };
    let tok = ck.tokenizer()?.clone();
    if tok.deepanalyze_tag_ids().is_none() {
        bail!("{}: the tokenizer lacks the DeepAnalyze tags (<Analyze> ... </Answer>)", ck.dir.join("tokenizer.json").display());
    }
    let template = ck.chat_template()?;
    if let Some(max) = cfg.rollout.max_prompt_tokens {
        let before = (train.len(), heldout.len());
        let fits = |(t, _): &(RlTask, PathBuf)| rollout::prompt_ids(&tok, &template, t).map_or(true, |ids| ids.len() <= max);
        train.retain(fits);
        heldout.retain(fits);
        if train.is_empty() {
            bail!("{}: rollout.max_prompt_tokens: every training task's prompt is over {max} tokens", cfg_path.display());
        }
        eprintln!("rl: left out {} training and {} held-out tasks whose prompt is over {max} tokens (rollout.max_prompt_tokens)",
                  before.0 - train.len(), before.1 - heldout.len());
    }
    let eval_tasks: Vec<(&RlTask, PathBuf)> = heldout.iter().take(cfg.eval.tasks).map(|(t, d)| (t, d.clone())).collect();
    let eos = ck.eos_token_ids();
    let source_dtype = ck.config.dtype.clone();
    // The frozen reference for the KL term: the stage's starting weights, on every device.
    let reference = (cfg.grpo.kl_coef != 0.0)
        .then(|| Checkpoint::<DefaultBackend>::load(&init_dir, &device).map(|c| c.model.for_generation(cfg.compute.precision)))
        .transpose()?;
    let references: Vec<Qwen3<DefaultBackend>> = reference.into_iter().flat_map(|r| devices.iter().map(move |d| r.clone().fork(d))).collect();
    let sandbox = Sandbox::new(SandboxConfig::default())?;

    let mut loader = Loader::new(vec![Source { name: "tasks".into(), items: (0..train.len()).collect::<Vec<usize>>(), weight: 1.0 }], cfg.seed);
    let mut optim = Optim::<TrainBackend>::new(&cfg.optim);
    let total_steps = cfg.train.steps;
    let mut state = match &resume_dir {
        Some(dir) => {
            let s = run_ckpt::read_state(dir)?;
            if s.total_steps != total_steps || s.seed != cfg.seed {
                bail!("{}: the checkpoint is of a run with {} steps and seed {}, this config gives {} and {}; use --resume never",
                      dir.display(), s.total_steps, s.seed, total_steps, cfg.seed);
            }
            loader.seek(s.cursor.clone());
            eprintln!("rl: resumed at step {} from {}", s.step, dir.display());
            if s.devices != all_devices {
                eprintln!("rl: the run stepped on {} device(s) and goes on on {all_devices}: each device samples its share of the tasks \
                           with its own seed, so the rollouts from here differ from an uninterrupted run's", s.devices);
            }
            RunState { devices: all_devices, ..s }
        }
        None => RunState { step: 0, total_steps, cursor: loader.cursor().clone(), seed: cfg.seed, tokens: 0, first_eval_loss: None, devices: all_devices },
    };
    let Checkpoint { config, model, .. } = ck;
    // With data parallel each parameter lives on the device that owns it (`parallel`).
    let mut model = crate::parallel::shard(model.with_stable_ids().with_compute(cfg.compute.model()), &devices);
    if let Some(dir) = &resume_dir {
        optim = optim.load(dir, &model, &devices)?; // keyed by the stable ids, sharded by owner
    }
    let scratch = tempfile::tempdir()?; // (the metrics of a rank other than 0)
    let mut metrics = Metrics::open(if primary { out } else { scratch.path() }, state.step)?;
    eprintln!("rl: {} training tasks, {} held out ({} evaluated), {} steps of {} tasks × {} samples; compute {}",
              train.len(), heldout.len(), eval_tasks.len(), total_steps, cfg.rollout.tasks_per_step, cfg.rollout.group_size, cfg.compute);

    let eval_cfg = RolloutConfig {
        max_turns: cfg.rollout.max_turns,
        max_new_tokens: cfg.rollout.max_new_tokens,
        max_response_tokens: cfg.rollout.max_response_tokens,
        sampling: SamplingConfig { temperature: 0.0, ..SamplingConfig::default() },
        max_rows: cfg.rollout.max_rows,
    };
    let evaluate = |model: &Qwen3<TrainBackend>, step: u64, metrics: &mut Metrics| -> Result<Option<f64>> {
        if eval_tasks.is_empty() {
            return Ok(None);
        }
        let bar = bar(eval_tasks.len() as u64, "held-out");
        let policy = model.for_inference();
        let env = Env { model: &policy, tok: &tok, template: &template, eos: &eos, sandbox: &sandbox };
        let (records, s) = evaluate::run(&env, &devices, &eval_tasks, 1, &eval_cfg, cfg.reward.numeric_tol, |n| bar.inc(n as u64))?;
        bar.finish_and_clear();
        if !primary {
            return Ok(Some(s.correct.unwrap_or(s.well_formed_and_ran)));
        }
        // The rollouts, to read: out/eval/step-N.jsonl (one JSON object per task).
        let dir = out.join("eval");
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let lines: Vec<String> = records.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
        let path = dir.join(format!("step-{step:08}.jsonl"));
        std::fs::write(&path, lines.join("\n") + "\n").with_context(|| path.display().to_string())?;
        let success = s.correct.unwrap_or(s.well_formed_and_ran);
        metrics.log(json!({"step": step, "eval_success": success, "eval_well_formed": s.well_formed, "eval_cell_success": s.cell_success_rate,
                           "eval_cells": s.mean_cells}))?;
        eprintln!("rl step {step}: held-out success {:.3} (well formed {:.3}, cells ok {:.3}) on {} tasks", success, s.well_formed, s.cell_success_rate, records.len());
        Ok(Some(success))
    };
    let mut first_success = None;
    if state.step == 0 {
        first_success = evaluate(&model, 0, &mut metrics)?;
        if primary {
            std::fs::write(out.join("first_eval.json"), serde_json::to_string(&first_success)?)?;
        }
    } else if let Ok(t) = std::fs::read_to_string(out.join("first_eval.json")) {
        first_success = serde_json::from_str(&t).unwrap_or(None);
    }

    let bar = bar(total_steps, "rl").with_position(state.step);
    let first_step = state.step + 1;
    let mut last_success = None;
    while state.step < total_steps {
        let step = state.step + 1;
        let (t0, c0) = (Instant::now(), crate::cluster::seconds());
        let picks: Vec<usize> = (0..cfg.rollout.tasks_per_step)
            .map(|_| {
                let (s, i) = loader.next_index();
                loader.items(s)[i]
            })
            .collect();
        let tasks: Vec<&RlTask> = picks.iter().map(|&i| &train[i].0).collect();
        let dirs: Vec<PathBuf> = picks.iter().map(|&i| train[i].1.clone()).collect();
        let rcfg = RolloutConfig {
            max_turns: cfg.rollout.max_turns,
            max_new_tokens: cfg.rollout.max_new_tokens,
            max_response_tokens: cfg.rollout.max_response_tokens,
            sampling: SamplingConfig {
                temperature: cfg.rollout.temperature,
                top_p: cfg.rollout.top_p,
                top_k: cfg.rollout.top_k,
                seed: cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(step << 20),
                ..SamplingConfig::default()
            },
            max_rows: cfg.rollout.max_rows,
        };
        // On CUDA the first rollouts and update compile and autotune their kernels.
        bar.set_message(if model::ON_GPU && step == first_step { "rollouts (first use on this machine: compiling and autotuning GPU kernels, minutes)" } else { "rollouts" });
        let policy = model.for_inference();
        let env = Env { model: &policy, tok: &tok, template: &template, eos: &eos, sandbox: &sandbox };
        let (trajs, timing) = rollout::run_on_devices(&env, &devices, &tasks, &dirs, cfg.rollout.group_size, &rcfg, |_| {})?;
        let t_score = Instant::now();
        let parts = score(&trajs, &tasks, cfg, &sandbox);
        let rewards: Vec<f64> = trajs.iter().zip(&parts).map(|(t, p)| p.total(&weights[&tasks[t.task].kind], cfg.reward.format_penalty)).collect();
        let sandbox_s = timing.sandbox + t_score.elapsed().as_secs_f64();
        let adv = grpo::advantages(&rewards, cfg.rollout.group_size, cfg.grpo.std_normalize, cfg.grpo.eps);

        // Which trajectories the update sees.
        let g = cfg.rollout.group_size;
        let keep: Vec<usize> = (0..trajs.len())
            .filter(|&i| !cfg.grpo.drop_zero_variance || grpo::has_variance(&rewards[i / g * g..(i / g + 1) * g]))
            .filter(|&i| !cfg.grpo.overlong_filter || trajs[i].finished)
            .filter(|&i| trajs[i].generated() > 0)
            .collect();
        // Stopping mid-step (Slurm signals the sandbox's workers too, so this step's cells
        // may have been killed): drop the step, keep the previous one's checkpoint.
        if crate::cluster::any(crate::interrupt::requested()) {
            bar.abandon();
            if state.step == 0 {
                bail!("rl: stopped by SIGTERM during the first step; nothing to keep (a rerun starts over)");
            }
            return Err(run_ckpt::stop("rl", out, &model, &config, &tok, &optim, &state, cfg.checkpoint.keep_last));
        }
        bar.set_message("update");
        let t_update = Instant::now();
        let lr = lr_at(&cfg.optim, state.step, total_steps);
        let mut stats = LossStats::default();
        let mut grad_norm = None;
        if !keep.is_empty() {
            for epoch in 0..cfg.grpo.update_epochs {
                let per = keep.len().div_ceil(cfg.grpo.mini_batches);
                for (mb, chunk) in keep.chunks(per).enumerate() {
                    let (m, s, gn) = update(model, &mut optim, &trajs, chunk, &adv, &references, cfg, lr, &devices)
                        .map_err(|e| anyhow!("rl step {step}, epoch {epoch}, mini-batch {mb}: {e}; last checkpoint kept, lower optim.lr"))?;
                    model = m;
                    if epoch == 0 {
                        stats += s;
                    }
                    grad_norm = Some(gn);
                }
            }
        }
        let update_s = t_update.elapsed().as_secs_f64();
        state.step = step;
        state.cursor = loader.cursor().clone();
        let gen_tokens: usize = trajs.iter().map(Trajectory::generated).sum();
        state.tokens += gen_tokens as u64;

        let mut row = json!({"step": step, "lr": lr, "reward": mean(&rewards), "trained_trajectories": keep.len(),
            "format_ok": mean(&parts.iter().map(|p| f64::from(u8::from(p.format_ok))).collect::<Vec<_>>()),
            "turns": mean(&trajs.iter().map(|t| t.cells() as f64).collect::<Vec<_>>()),
            "response_tokens": mean(&trajs.iter().map(|t| t.ids.len() as f64).collect::<Vec<_>>()),
            "generated_tokens": gen_tokens, "finished": mean(&trajs.iter().map(|t| f64::from(u8::from(t.finished))).collect::<Vec<_>>()),
            "generate_s": timing.generate, "sandbox_s": sandbox_s, "update_s": update_s, "step_s": t0.elapsed().as_secs_f64(),
            "rollout_tokens_per_s": gen_tokens as f64 / timing.generate.max(1e-9)});
        for part in reward::PARTS {
            let xs: Vec<f64> = parts.iter().filter_map(|p| p.get(part)).collect();
            if !xs.is_empty() {
                row[format!("reward_{part}")] = json!(mean(&xs));
            }
        }
        for (kind, ok) in success_by_kind(&trajs, &tasks, &parts) {
            row[format!("success_{kind}")] = json!(ok);
        }
        if stats.tokens > 0 {
            let n = stats.tokens as f64;
            row["clip_fraction"] = json!(stats.clipped / n);
            row["kl_rollout"] = json!(stats.kl_old / n);
            row["entropy"] = json!(stats.entropy / n);
            if !references.is_empty() {
                row["kl_ref"] = json!(stats.kl_ref / n);
            }
        }
        if let Some(gn) = grad_norm {
            row["grad_norm"] = json!(gn);
        }
        if let (Some(c0), Some(c1)) = (c0, crate::cluster::seconds()) {
            row["cluster_s"] = json!(c1 - c0);
        }
        metrics.log(row)?;
        if primary {
            write_rollouts(out, step, &trajs, &tasks, &parts, &rewards)?;
        }
        bar.set_position(step);
        bar.set_message(format!("reward {:.3}", mean(&rewards)));

        let last = step == total_steps;
        if last || (cfg.eval.every > 0 && step % cfg.eval.every == 0) {
            last_success = evaluate(&model, step, &mut metrics)?;
        }
        if let Err(e) = run_ckpt::after_step("rl", out, &model, &config, &tok, &optim, &state, &cfg.checkpoint, last) {
            bar.abandon();
            return Err(e);
        }
    }
    bar.finish();
    let final_dir = out.join("final");
    let outcome = StageOutcome { kind: StageKind::Rl, final_dir, first_eval_loss: None, last_eval_loss: None, steps: state.step,
                                 first_success, last_success };
    crate::cluster::primary_only(|| -> Result<()> {
        run_ckpt::write_atomic(&outcome.final_dir, &model, &config, &tok, &source_dtype, |_| Ok(()))?;
        crate::plots::write_rl(out, &metrics)?;
        Ok(std::fs::write(&outcome_path, serde_json::to_string_pretty(&outcome)?)?)
    })?;
    eprintln!("rl: done: {} steps, held-out success {:?} → {:?}; model in {}", outcome.steps, first_success, last_success, outcome.final_dir.display());
    Ok(outcome)
}

/// Every trajectory's reward parts, each scored where its workspace is (the rank that
/// generated it: its file check reads what its cells wrote there) and shared with the
/// other ranks (`cluster`).
fn score(trajs: &[Trajectory], tasks: &[&RlTask], cfg: &RlConfig, sandbox: &Sandbox) -> Vec<Parts> {
    let here: Vec<(usize, Parts)> = trajs.par_iter().enumerate().filter(|(_, t)| t.workspace.is_some())
        .map(|(i, t)| (i, reward::score(t, tasks[t.task], &cfg.reward, sandbox))).collect();
    crate::cluster::gather_indexed(here, trajs.len())
}

/// Training and held-out tasks, each with its workspace folder.
pub fn load_tasks(cfg: &RlConfig) -> Result<(Vec<(RlTask, PathBuf)>, Vec<(RlTask, PathBuf)>)> {
    let (mut train, mut held) = (vec![], vec![]);
    for dir in &cfg.data.tasks {
        let tasks = datasets::read_all::<RlTask>(dir).with_context(|| format!("data.tasks: {}", dir.display()))?;
        for t in tasks {
            if !cfg.data.kinds.is_empty() && !cfg.data.kinds.contains(&t.kind) {
                continue;
            }
            let ws = rollout::workspace_dir(&t, dir);
            if curriculum::heldout(&t.id, cfg.data.heldout) {
                held.push((t, ws));
            } else {
                train.push((t, ws));
            }
        }
    }
    if train.is_empty() {
        bail!("data.tasks: no training task in {:?} (kinds {:?}, heldout {})", cfg.data.tasks, cfg.data.kinds, cfg.data.heldout);
    }
    Ok((train, held))
}

/// Concatenates trajectories (prompt + response) into one packed row, documents apart.
pub fn packed_row(trajs: &[&Trajectory]) -> PackedSeq {
    let (mut ids, mut mask, mut positions, mut doc_lens) = (vec![], vec![], vec![], vec![]);
    for t in trajs {
        let n = t.prompt_ids.len() + t.ids.len();
        ids.extend(t.prompt_ids.iter().chain(&t.ids));
        mask.extend(std::iter::repeat_n(0u8, t.prompt_ids.len()).chain(t.mask.iter().copied()));
        positions.extend(0..n as u32);
        doc_lens.push(n);
    }
    PackedSeq { ids, mask, positions, doc_lens }
}

/// One optimizer step on the trajectories `chosen` (a mini-batch).
#[allow(clippy::too_many_arguments)]
fn update(
    model: Qwen3<TrainBackend>,
    optim: &mut Optim<TrainBackend>,
    trajs: &[Trajectory],
    chosen: &[usize],
    adv: &[f64],
    references: &[Qwen3<DefaultBackend>],
    cfg: &RlConfig,
    lr: f64,
    devices: &[burn::tensor::Device<TrainBackend>],
) -> Result<(Qwen3<TrainBackend>, LossStats, f64)> {
    let r = &cfg.rollout;
    let (grads, stats) = policy_grads(&model, trajs, chosen, adv, references, &cfg.grpo, r.max_response_tokens, r.temperature, devices)?;
    let (model, gn) = optim.apply(model, grads, lr);
    let gn = gn.map_err(|e| anyhow!("{} is {}", e.what, e.value))?;
    Ok((model, stats, gn))
}

/// Gradients of the GRPO loss over the generated tokens of `chosen` (`adv[i]` is
/// trajectory i's advantage), micro-batched by `spec.micro_batch_tokens` and shared out
/// among `devices` (`references`, when the loss has a KL term: the frozen model on each);
/// observation and prompt tokens are context only. The policy is softmax(logits /
/// `temperature`), the distribution the rollouts sampled from (1 when they were greedy).
#[allow(clippy::too_many_arguments)]
pub fn policy_grads<B: model::TrainingBackend>(
    model: &Qwen3<B>,
    trajs: &[Trajectory],
    chosen: &[usize],
    adv: &[f64],
    references: &[Qwen3<B::InnerBackend>],
    spec: &GrpoSpec,
    max_response_tokens: usize,
    temperature: f32,
    devices: &[burn::tensor::Device<B>],
) -> Result<(GradientsParams, LossStats)> {
    let temperature = model::policy_temperature(temperature);
    let total_gen: usize = chosen.iter().map(|&i| trajs[i].generated()).sum();
    let n_seq = chosen.len() as f64;
    let constant = spec.constant_norm.unwrap_or(max_response_tokens as f64);
    let weight = |t: &Trajectory| -> f32 {
        (match spec.loss_agg.as_str() {
            "seq-mean" => 1.0 / (n_seq * t.generated() as f64),
            "constant" => 1.0 / (n_seq * constant),
            _ => 1.0 / total_gen as f64,
        }) as f32
    };
    let groups = micro_batches(trajs, chosen, spec.micro_batch_tokens);
    let (parts, grads) = crate::parallel::grads(model, devices, &groups, |k, model, group, emit| {
        let ts: Vec<&Trajectory> = group.iter().map(|&i| &trajs[i]).collect();
        let row = packed_row(&ts);
        let mut terms = TokenTerms::default();
        for (&i, t) in group.iter().zip(&ts) {
            for (j, &m) in t.mask.iter().enumerate() {
                if m == 1 {
                    terms.old_logp.push(t.logprobs[j]);
                    terms.advantage.push(adv[i] as f32);
                    terms.weight.push(weight(t));
                }
            }
        }
        if let Some(r) = references.get(k) {
            let (lp, _) = trained_logprobs(r, std::slice::from_ref(&row), temperature).expect("generated tokens");
            terms.ref_logp = Some(lp.into_data().convert::<f32>().to_vec().expect("f32 log-probs"));
        }
        let mut s = None;
        let v = trained_loss_streamed(model, std::slice::from_ref(&row), temperature, |logp, entropy| {
            let (loss, st) = grpo::loss(logp, Some(entropy), &terms, spec);
            s = Some(st);
            loss
        }, emit)
        .expect("generated tokens");
        Some((v, s.expect("the loss ran")))
    });
    let mut stats = LossStats::default();
    for (v, s) in parts.into_iter().flatten() {
        if !v.is_finite() {
            bail!("the loss is {v}");
        }
        stats += s;
    }
    Ok((grads, stats))
}

/// Consecutive groups of `chosen` whose tokens stay within `budget` (one trajectory at least).
fn micro_batches(trajs: &[Trajectory], chosen: &[usize], budget: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![];
    let mut used = 0;
    for &i in chosen {
        let n = trajs[i].prompt_ids.len() + trajs[i].ids.len();
        match out.last_mut() {
            Some(last) if used + n <= budget => {
                last.push(i);
                used += n;
            }
            _ => {
                out.push(vec![i]);
                used = n;
            }
        }
    }
    out
}

/// Share of trajectories per task kind that succeed: qa answered right, a data task's
/// file check passed, otherwise a well-formed trajectory whose cells ran.
fn success_by_kind(trajs: &[Trajectory], tasks: &[&RlTask], parts: &[Parts]) -> BTreeMap<String, f64> {
    let mut by: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (t, p) in trajs.iter().zip(parts) {
        let ok = p.format_ok && p.accuracy.or(p.checklist).unwrap_or(p.code_success.unwrap_or(0.0)) >= 1.0;
        let e = by.entry(tasks[t.task].kind.clone()).or_default();
        e.0 += f64::from(u8::from(ok));
        e.1 += 1.0;
    }
    by.into_iter().map(|(k, (a, n))| (k, a / n)).collect()
}

/// The step's trajectories as `rollout` records: out/rollouts/step-N/*.parquet.
fn write_rollouts(out: &Path, step: u64, trajs: &[Trajectory], tasks: &[&RlTask], parts: &[Parts], rewards: &[f64]) -> Result<()> {
    let dir = out.join("rollouts").join(format!("step-{step:08}"));
    let _ = std::fs::remove_dir_all(&dir); // a resumed run writes the step again
    let mut w = ShardWriter::<datasets::Rollout>::create(&dir, datasets::import::DEFAULT_SHARD_BYTES)?;
    let mut sample: BTreeMap<usize, u32> = BTreeMap::new();
    for ((t, p), &r) in trajs.iter().zip(parts).zip(rewards) {
        let k = sample.entry(t.task).or_default();
        w.write(datasets::Rollout {
            task_id: tasks[t.task].id.clone(),
            sample: *k,
            step,
            token_ids: t.prompt_ids.iter().chain(&t.ids).copied().collect(),
            loss_mask: std::iter::repeat_n(0, t.prompt_ids.len()).chain(t.mask.iter().copied()).collect(),
            logprobs: std::iter::repeat_n(0.0, t.prompt_ids.len()).chain(t.logprobs.iter().copied()).collect(),
            reward: r as f32,
            reward_parts: serde_json::to_string(p)?,
            observations: t.observations.clone(),
            turns: t.cells() as u32,
        })?;
        *k += 1;
    }
    w.finish()?;
    Ok(())
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// A progress bar (on rank 0 only, across machines).
fn bar(len: u64, prefix: &str) -> ProgressBar {
    let b = if crate::cluster::primary() { ProgressBar::new(len) } else { ProgressBar::hidden() };
    b.set_style(ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} ETA {eta}").unwrap());
    b.set_prefix(prefix.to_string());
    b
}
