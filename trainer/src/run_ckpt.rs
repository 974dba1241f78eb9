//! Resumable checkpoints of a run: `out/checkpoints/step-NNNNNNNN/`, each an HF folder of
//! f32 master weights plus the optimizer state and `state.json` (step, loader cursor,
//! seed, tokens). Written into a hidden temporary folder and renamed into place, so a
//! crash or a full disk mid-write leaves the previous checkpoints as they were.
use crate::stage_config::CheckpointSpec;
use crate::step::Optim;
use anyhow::{Context, Result};
use model::{Qwen3, Qwen3Config, Tokenizer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// Optimizer steps completed.
    pub step: u64,
    pub total_steps: u64,
    /// Where the data loader continues (its samples are a pure function of seed + cursor;
    /// SFT draws no other random numbers).
    pub cursor: datasets::Cursor,
    pub seed: u64,
    /// Trained tokens so far.
    pub tokens: u64,
    pub first_eval_loss: Option<f64>,
    /// Data-parallel devices of the step that wrote it (RL rollouts sample per device).
    #[serde(default = "one")]
    pub devices: usize,
}

fn one() -> usize {
    1
}

/// Writes an HF folder (weights in `dtype`, config, tokenizer) to `dir` via a temporary
/// sibling renamed into place; `extra` then adds files (optimizer, state) before the rename.
pub fn write_atomic<B: model::TrainingBackend>(
    dir: &Path,
    model: &Qwen3<B>,
    cfg: &Qwen3Config,
    tok: &Tokenizer,
    dtype: &str,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    let tmp = parent.join(format!(".tmp-{}", dir.file_name().unwrap().to_string_lossy()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| -> Result<()> {
        std::fs::create_dir_all(&tmp).with_context(|| tmp.display().to_string())?;
        let mut cfg = cfg.clone();
        cfg.dtype = dtype.to_string();
        model::checkpoint::save(model, &cfg, &tmp, model::DEFAULT_MAX_SHARD_BYTES)?;
        tok.save(&tmp)?;
        extra(&tmp)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| dir.display().to_string())?;
        }
        std::fs::rename(&tmp, dir).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.with_context(|| format!("writing checkpoint {} (earlier checkpoints are untouched)", dir.display()))
}

pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// Saves a resumable checkpoint at `state.step`, then keeps only the newest `keep_last`
/// (and removes what a killed run can leave: a half-deleted old checkpoint, a temporary
/// folder of an interrupted write; a run folder has one writer, so none is in flight).
#[allow(clippy::too_many_arguments)]
pub fn save<B: model::TrainingBackend>(out: &Path, model: &Qwen3<B>, cfg: &Qwen3Config, tok: &Tokenizer, optim: &Optim<B>, state: &RunState, keep_last: usize) -> Result<PathBuf> {
    let dir = checkpoints_dir(out).join(format!("step-{:08}", state.step));
    write_atomic(&dir, model, cfg, tok, "float32", |tmp| {
        optim.save(tmp)?;
        let p = tmp.join("state.json");
        std::fs::write(&p, serde_json::to_string_pretty(state)?).with_context(|| p.display().to_string())
    })?;
    let all = complete(out);
    let keep = &all[all.len().saturating_sub(keep_last.max(1))..];
    for entry in std::fs::read_dir(checkpoints_dir(out)).into_iter().flatten().flatten() {
        if entry.path().is_dir() && !keep.contains(&entry.path()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(dir)
}

/// The end of step `state.step`: a checkpoint when `every` (or the last step) asks for
/// one; then, if SIGTERM asked the run to stop, [`stop`].
#[allow(clippy::too_many_arguments)]
pub fn after_step<B: model::TrainingBackend>(stage: &str, out: &Path, model: &Qwen3<B>, cfg: &Qwen3Config, tok: &Tokenizer, optim: &Optim<B>, state: &RunState, spec: &CheckpointSpec, last: bool) -> Result<()> {
    if crate::cluster::primary() && (last || (spec.every > 0 && state.step % spec.every == 0)) {
        save(out, model, cfg, tok, optim, state, spec.keep_last)?;
    }
    // Across machines a SIGTERM seen by one rank stops all of them after the same step.
    if !last && crate::cluster::any(crate::interrupt::requested()) {
        return Err(stop(stage, out, model, cfg, tok, optim, state, spec.keep_last));
    }
    Ok(())
}

/// Stops a run for SIGTERM at `state.step`: its checkpoint (saved now unless complete
/// already) and the error naming it.
#[allow(clippy::too_many_arguments)]
pub fn stop<B: model::TrainingBackend>(stage: &str, out: &Path, model: &Qwen3<B>, cfg: &Qwen3Config, tok: &Tokenizer, optim: &Optim<B>, state: &RunState, keep_last: usize) -> anyhow::Error {
    let dir = checkpoints_dir(out).join(format!("step-{:08}", state.step));
    let saved = if dir.join("state.json").exists() || !crate::cluster::primary() { Ok(dir) } else { save(out, model, cfg, tok, optim, state, keep_last) };
    match saved {
        Ok(dir) => crate::interrupt::stopped(stage, state.step, &dir),
        Err(e) => e,
    }
}

/// Complete checkpoints, oldest first (temporary folders of an interrupted write are ignored).
pub fn complete(out: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(checkpoints_dir(out))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")) && p.join("state.json").exists())
        .collect();
    dirs.sort();
    dirs
}

pub fn read_state(dir: &Path) -> Result<RunState> {
    let p = dir.join("state.json");
    let text = std::fs::read_to_string(&p).with_context(|| p.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a run state", p.display()))
}
