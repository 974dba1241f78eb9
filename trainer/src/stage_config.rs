//! A stage's TOML config (configs/stage1.toml documents every field). Unknown keys are
//! errors with their line; paths are relative to the working directory.
use curriculum::Mixture;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Run folder: checkpoints/, final/, metrics.jsonl, events (TensorBoard), plots.
    pub out: PathBuf,
    #[serde(default)]
    pub seed: u64,
    pub model: ModelSpec,
    pub data: Mixture,
    pub batch: BatchSpec,
    pub optim: OptimSpec,
    #[serde(default)]
    pub train: TrainSpec,
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    #[serde(default)]
    pub eval: EvalSpec,
    /// Precision, gradient checkpointing and devices (`[compute]`; f32, no checkpointing,
    /// one device by default).
    #[serde(default)]
    pub compute: ComputeSpec,
}

/// `[compute]` of every stage: how the model computes, and on how many devices.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeSpec {
    #[serde(default)]
    pub precision: model::Precision,
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Data parallel: a replica of the model on each of this many devices (GPUs 0..n of
    /// the machine) computes the gradients of its share of the micro-batches.
    #[serde(default = "one_device")]
    pub devices: usize,
}

fn one_device() -> usize {
    1
}

impl Default for ComputeSpec {
    fn default() -> Self {
        Self { precision: Default::default(), gradient_checkpointing: false, devices: 1 }
    }
}

impl ComputeSpec {
    /// What the model itself is told (precision, checkpointing).
    pub fn model(&self) -> model::Compute {
        model::Compute { precision: self.precision, gradient_checkpointing: self.gradient_checkpointing }
    }

    /// The devices, or an error naming `[compute] devices` in `path`.
    pub fn devices(&self, path: &Path) -> anyhow::Result<Vec<burn::tensor::Device<model::DefaultBackend>>> {
        if self.devices > 1 && !model::ON_GPU {
            eprintln!("compute.devices = {}: on a CPU build the replicas share the machine's cores", self.devices);
        }
        model::devices(self.devices).map_err(|e| anyhow::anyhow!("{}: compute.devices = {}: {e}", path.display(), self.devices))
    }
}

impl std::fmt::Display for ComputeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.model())?;
        if self.devices > 1 {
            write!(f, ", data parallel on {} devices", self.devices)?;
        }
        Ok(())
    }
}

/// Where the weights come from: an HF folder (`init`), or a from-scratch architecture
/// (`arch`, a config.json) with a tokenizer folder or one trained here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub init: Option<PathBuf>,
    pub arch: Option<PathBuf>,
    /// With `arch`: a folder holding tokenizer.json; absent, a BPE tokenizer is trained.
    pub tokenizer: Option<PathBuf>,
    /// With `arch` and no `tokenizer`: vocabulary size of the trained BPE tokenizer.
    #[serde(default = "default_vocab")]
    pub tokenizer_vocab: usize,
    /// Add the DeepAnalyze tags when the tokenizer lacks them (new rows start at the mean
    /// embedding); otherwise such a tokenizer is an error.
    #[serde(default)]
    pub add_tags: bool,
    /// Shard folders the tokenizer is trained on (default: this stage's sources).
    #[serde(default)]
    pub tokenizer_corpus: Vec<PathBuf>,
}

fn default_vocab() -> usize {
    4096
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Tokens per packed sequence.
    pub seq_len: usize,
    /// Real tokens per optimizer step (documents are drawn until the next would exceed it).
    pub batch_tokens: usize,
    /// Packed sequences per forward/backward; a step runs as many micro-batches as its
    /// packing needs, with the loss normalized by the step's total trained tokens.
    #[serde(default = "one")]
    pub micro_batch: usize,
    /// Samples longer than seq_len: "truncate" or "drop".
    #[serde(default = "truncate")]
    pub overlong: String,
}

fn one() -> usize {
    1
}
fn truncate() -> String {
    "truncate".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSpec {
    pub lr: f64,
    #[serde(default = "betas")]
    pub betas: [f64; 2],
    #[serde(default = "eps")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Decay norm gains (1-D parameters) too; transformers' Trainer does not.
    #[serde(default)]
    pub decay_norms: bool,
    /// Clip the global gradient norm to this (none: no clipping).
    pub clip: Option<f64>,
    /// "cosine", "linear" or "constant", after a linear warmup.
    #[serde(default = "cosine")]
    pub schedule: String,
    /// Warmup as a fraction of the stage's steps.
    #[serde(default)]
    pub warmup: f64,
    /// Floor of the cosine schedule as a fraction of lr.
    #[serde(default)]
    pub min_lr_ratio: f64,
}

fn betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn eps() -> f64 {
    1e-8
}
fn cosine() -> String {
    "cosine".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Passes over the training tokens (fractional allowed).
    #[serde(default = "one_f")]
    pub epochs: f64,
    /// Stop after this many steps instead.
    pub max_steps: Option<u64>,
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self { epochs: 1.0, max_steps: None }
    }
}

fn one_f() -> f64 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Save every N steps (0: only at the end).
    #[serde(default)]
    pub every: u64,
    /// Resumable checkpoints kept (oldest removed after a newer one is complete).
    #[serde(default = "two")]
    pub keep_last: usize,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        Self { every: 0, keep_last: 2 }
    }
}

fn two() -> usize {
    2
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Held-out loss every N steps (0: only before the first and after the last step).
    #[serde(default)]
    pub every: u64,
    /// At most this many held-out tokens per evaluation.
    #[serde(default = "eval_tokens")]
    pub max_tokens: usize,
}

impl Default for EvalSpec {
    fn default() -> Self {
        Self { every: 0, max_tokens: eval_tokens() }
    }
}

fn eval_tokens() -> usize {
    65536
}

impl StageConfig {
    pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<Self> {
        let cfg: StageConfig = curriculum::load_toml(path, overrides)?;
        let bad = |field: &str, why: &str| Err(anyhow::anyhow!("{}: {field}: {why}", path.display()));
        match (&cfg.model.init, &cfg.model.arch) {
            (Some(_), Some(_)) => return bad("model", "give `init` (an HF folder) or `arch` (from scratch), not both"),
            (None, None) => return bad("model", "give `init` (an HF folder) or `arch` (a config.json to start from scratch)"),
            _ => {}
        }
        if !["cosine", "linear", "constant"].contains(&cfg.optim.schedule.as_str()) {
            return bad("optim.schedule", "expected \"cosine\", \"linear\" or \"constant\"");
        }
        if !["truncate", "drop"].contains(&cfg.batch.overlong.as_str()) {
            return bad("batch.overlong", "expected \"truncate\" or \"drop\"");
        }
        if cfg.batch.seq_len < 2 || cfg.batch.batch_tokens < cfg.batch.seq_len.min(2) || cfg.batch.micro_batch == 0 {
            return bad("batch", "seq_len >= 2, batch_tokens > 0 and micro_batch > 0 are needed");
        }
        if !(cfg.optim.lr >= 0.0) || !(0.0..1.0).contains(&cfg.optim.warmup) {
            return bad("optim", "lr must be >= 0 and warmup in [0, 1)");
        }
        if cfg.compute.devices == 0 {
            return bad("compute.devices", "must be at least 1");
        }
        Ok(cfg)
    }
}

/// The learning rate at `step` (0-based) of `total`, as transformers' schedulers give it
/// (so step 0 of a warmup has lr 0).
pub fn lr_at(o: &OptimSpec, step: u64, total: u64) -> f64 {
    let warm = (o.warmup * total as f64).ceil() as u64;
    if step < warm {
        return o.lr * step as f64 / warm.max(1) as f64;
    }
    let progress = (step - warm) as f64 / (total.saturating_sub(warm)).max(1) as f64;
    match o.schedule.as_str() {
        "constant" => o.lr,
        "linear" => o.lr * (1.0 - progress).max(0.0),
        _ => {
            let c = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * c).max(0.0)
        }
    }
}
