//! GRPO: group-normalized advantages and the clipped policy-gradient loss over the
//! generated tokens of multi-turn trajectories (observations are context, never targets).
use burn::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoSpec {
    /// Divide by the group's standard deviation (sample std, as torch.std) + `eps`
    /// (false: Dr. GRPO's mean-only centering).
    #[serde(default = "yes")]
    pub std_normalize: bool,
    #[serde(default = "eps")]
    pub eps: f64,
    /// PPO ratio clip: [1 - clip_low, 1 + clip_high] (DAPO's clip-higher: clip_high > clip_low).
    #[serde(default = "clip")]
    pub clip_low: f64,
    #[serde(default = "clip")]
    pub clip_high: f64,
    /// "token-mean" (over every generated token of the step), "seq-mean" (each
    /// trajectory's token mean, averaged over trajectories) or "constant" (token sum per
    /// trajectory / `constant_norm`, averaged over trajectories: Dr. GRPO).
    #[serde(default = "token_mean")]
    pub loss_agg: String,
    /// The divisor of "constant" (default: rollout.max_response_tokens).
    pub constant_norm: Option<f64>,
    /// KL to the frozen starting model, in the loss (0: none, and no reference model is kept).
    #[serde(default)]
    pub kl_coef: f64,
    /// "k1" (log ratio) or "k3" (exp(ref - logp) - (ref - logp) - 1, always ≥ 0).
    #[serde(default = "k3")]
    pub kl: String,
    /// Groups whose rewards are all equal carry no signal; drop them from the update.
    #[serde(default = "yes")]
    pub drop_zero_variance: bool,
    /// Trajectories cut by the token or turn limit get no gradient (their reward says
    /// nothing about a finished answer).
    #[serde(default = "yes")]
    pub overlong_filter: bool,
    /// Passes over each rollout batch; ratios are against the rollout log-probs.
    #[serde(default = "one")]
    pub update_epochs: usize,
    /// Optimizer steps per pass (the batch is split into this many mini-batches).
    #[serde(default = "one")]
    pub mini_batches: usize,
    /// Tokens per forward/backward (trajectories are concatenated up to this).
    #[serde(default = "mb_tokens")]
    pub micro_batch_tokens: usize,
}

fn yes() -> bool {
    true
}
fn eps() -> f64 {
    1e-6
}
fn clip() -> f64 {
    0.2
}
fn token_mean() -> String {
    "token-mean".into()
}
fn k3() -> String {
    "k3".into()
}
fn one() -> usize {
    1
}
fn mb_tokens() -> usize {
    8192
}

/// (r - mean) / (std + eps) within each consecutive group of `group` rewards (or r - mean).
pub fn advantages(rewards: &[f64], group: usize, std_normalize: bool, eps: f64) -> Vec<f64> {
    rewards
        .chunks(group)
        .flat_map(|g| {
            let n = g.len() as f64;
            let mean = g.iter().sum::<f64>() / n;
            let std = if n > 1.0 { (g.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
            g.iter().map(move |r| if std_normalize { (r - mean) / (std + eps) } else { r - mean })
        })
        .collect()
}

/// Whether a group's rewards differ at all.
pub fn has_variance(group: &[f64]) -> bool {
    group.iter().any(|r| (r - group[0]).abs() > 1e-12)
}

/// Per generated token of a micro-batch, in order: what the loss needs beside the
/// current log-probs.
#[derive(Debug, Clone, Default)]
pub struct TokenTerms {
    pub old_logp: Vec<f32>,
    pub advantage: Vec<f32>,
    /// Aggregation weight (e.g. 1 / generated tokens of the step for token-mean).
    pub weight: Vec<f32>,
    /// Reference-model log-probs (only with a KL term).
    pub ref_logp: Option<Vec<f32>>,
}

/// Sums over the micro-batch's tokens, for logging (divide by `tokens`).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct LossStats {
    pub tokens: usize,
    pub clipped: f64,
    /// Σ (old - new) log-prob: the k1 estimate of KL(rollout ‖ current).
    pub kl_old: f64,
    /// Σ of the KL estimator to the reference.
    pub kl_ref: f64,
    pub entropy: f64,
}

impl std::ops::AddAssign for LossStats {
    fn add_assign(&mut self, o: Self) {
        self.tokens += o.tokens;
        self.clipped += o.clipped;
        self.kl_old += o.kl_old;
        self.kl_ref += o.kl_ref;
        self.entropy += o.entropy;
    }
}

/// Σ_t w_t · (max(-A_t·ρ_t, -A_t·clip(ρ_t, 1-lo, 1+hi)) + β·KL_t) with ρ_t = exp(logp_t - old_t).
/// `logp` is `[n]` (the current policy's log-prob of each generated token), `entropy`
/// `[n]` (each token's policy entropy, for logging) when given.
pub fn loss<B: Backend>(logp: Tensor<B, 1>, entropy: Option<Tensor<B, 1>>, terms: &TokenTerms, spec: &GrpoSpec) -> (Tensor<B, 1>, LossStats) {
    let device = logp.device();
    let n = terms.advantage.len();
    let data = |v: &[f32]| Tensor::<B, 1>::from_data(TensorData::new(v.to_vec(), [n]), &device);
    let (old, adv, w) = (data(&terms.old_logp), data(&terms.advantage), data(&terms.weight));
    let ratio = (logp.clone() - old.clone()).exp();
    let pg1 = adv.clone().neg() * ratio.clone();
    let pg2 = adv.neg() * ratio.clamp(1.0 - spec.clip_low, 1.0 + spec.clip_high);
    let clipped = pg2.clone().greater(pg1.clone()).float().sum().into_scalar().elem::<f64>();
    let mut per_token = pg1.max_pair(pg2);
    let mut kl_ref = 0.0;
    if let (Some(r), true) = (&terms.ref_logp, spec.kl_coef != 0.0) {
        let d = data(r) - logp.clone(); // ref - logp
        let kl = if spec.kl == "k1" { d.neg() } else { d.clone().exp() - d - 1.0 };
        kl_ref = kl.clone().sum().into_scalar().elem::<f64>();
        per_token = per_token + kl.mul_scalar(spec.kl_coef);
    }
    let kl_old = (old - logp.clone().detach()).sum().into_scalar().elem::<f64>();
    let entropy = entropy.map_or(0.0, |e| e.detach().sum().into_scalar().elem::<f64>());
    ((per_token * w).sum(), LossStats { tokens: n, clipped, kl_old, kl_ref, entropy })
}
