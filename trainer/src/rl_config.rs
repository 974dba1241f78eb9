//! The RL stage's TOML config (configs/stage3.toml documents every field).
use crate::grpo::GrpoSpec;
use crate::reward::RewardSpec;
use crate::stage_config::{CheckpointSpec, OptimSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlConfig {
    pub out: PathBuf,
    #[serde(default)]
    pub seed: u64,
    pub model: RlModel,
    pub data: RlData,
    pub rollout: RolloutSpec,
    #[serde(default)]
    pub reward: RewardSpec,
    pub grpo: GrpoSpec,
    pub optim: OptimSpec,
    pub train: RlTrain,
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    #[serde(default)]
    pub eval: RlEval,
    /// Precision, gradient checkpointing and devices, as the SFT stages' `[compute]`.
    #[serde(default)]
    pub compute: crate::stage_config::ComputeSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlModel {
    /// HF folder the policy starts from (in `--stage all`, the previous stage's model).
    pub init: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlData {
    /// Shard folders of `rl_task` records (workspaces relative to each).
    pub tasks: Vec<PathBuf>,
    /// Keep only these kinds (qa, datatask, openresearch); empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Fraction of tasks held out (the same stable split as the SFT stages).
    #[serde(default)]
    pub heldout: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Tasks per RL step.
    pub tasks_per_step: usize,
    /// Samples per task (the GRPO group).
    pub group_size: usize,
    pub max_turns: usize,
    /// Tokens per generation turn.
    pub max_new_tokens: usize,
    /// Tokens per response, observations included.
    pub max_response_tokens: usize,
    /// Tasks whose prompt (in the chat template) is longer are left out (none: all kept).
    #[serde(default)]
    pub max_prompt_tokens: Option<usize>,
    /// Trajectories a device decodes together (bounds the KV cache: a step's tasks run in
    /// waves); none: all of its share at once.
    #[serde(default)]
    pub max_rows: Option<usize>,
    #[serde(default = "one_f32")]
    pub temperature: f32,
    #[serde(default = "one_f32")]
    pub top_p: f32,
    #[serde(default)]
    pub top_k: usize,
}

fn one_f32() -> f32 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlTrain {
    /// RL steps (each: rollouts of `tasks_per_step` × `group_size`, then the update).
    pub steps: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlEval {
    /// Held-out evaluation (greedy, one sample per task) every N steps (0: only before
    /// the first step and after the last).
    #[serde(default)]
    pub every: u64,
    /// Held-out tasks evaluated (the first N of the split).
    #[serde(default = "eval_tasks")]
    pub tasks: usize,
}

impl Default for RlEval {
    fn default() -> Self {
        Self { every: 0, tasks: eval_tasks() }
    }
}

fn eval_tasks() -> usize {
    32
}

impl RlConfig {
    pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<Self> {
        let cfg: RlConfig = curriculum::load_toml(path, overrides)?;
        let bad = |field: &str, why: &str| Err(anyhow::anyhow!("{}: {field}: {why}", path.display()));
        let r = &cfg.rollout;
        if r.max_rows == Some(0) {
            return bad("rollout.max_rows", "must be at least 1 (leave it out to decode a device's share at once)");
        }
        if r.tasks_per_step == 0 || r.group_size == 0 || r.max_turns == 0 || r.max_new_tokens == 0 || r.max_response_tokens == 0 {
            return bad("rollout", "tasks_per_step, group_size, max_turns, max_new_tokens and max_response_tokens must be > 0");
        }
        if cfg.data.tasks.is_empty() {
            return bad("data.tasks", "name at least one shard folder of RL tasks");
        }
        if let Some(k) = cfg.data.kinds.iter().find(|k| !datasets::records::TASK_KINDS.contains(&k.as_str())) {
            return bad("data.kinds", &format!("{k:?} is not a task kind (qa, datatask, openresearch)"));
        }
        let g = &cfg.grpo;
        if !["token-mean", "seq-mean", "constant"].contains(&g.loss_agg.as_str()) {
            return bad("grpo.loss_agg", "expected \"token-mean\", \"seq-mean\" or \"constant\"");
        }
        if !["k1", "k3"].contains(&g.kl.as_str()) {
            return bad("grpo.kl", "expected \"k1\" or \"k3\"");
        }
        if g.update_epochs == 0 || g.mini_batches == 0 || g.micro_batch_tokens == 0 || !(g.clip_low >= 0.0 && g.clip_low < 1.0) || !(g.clip_high >= 0.0) {
            return bad("grpo", "update_epochs, mini_batches, micro_batch_tokens > 0; clip_low in [0, 1); clip_high >= 0");
        }
        if !["cosine", "linear", "constant"].contains(&cfg.optim.schedule.as_str()) {
            return bad("optim.schedule", "expected \"cosine\", \"linear\" or \"constant\"");
        }
        if cfg.compute.devices == 0 {
            return bad("compute.devices", "must be at least 1");
        }
        cfg.reward.resolved().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(cfg)
    }
}
