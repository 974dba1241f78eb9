//! The rollout flags that `eval`, `ask` and `synth --teacher local` share.
use trainer::rollout::RolloutConfig;

#[derive(clap::Args)]
pub struct RolloutArgs {
    /// `<Code>` cells per trajectory at most.
    #[arg(long, default_value_t = 8)]
    pub max_turns: usize,
    /// Tokens per turn.
    #[arg(long, default_value_t = 768)]
    pub max_new_tokens: usize,
    /// f32, or bf16 (bf16 matrices and compute, as `[compute] precision = "bf16"`; for GPUs).
    #[arg(long, default_value = "f32")]
    pub precision: model::Precision,
}

impl RolloutArgs {
    /// These limits (a response of at most max_turns × (max_new_tokens + 1024) tokens: room
    /// for each turn's observation), sampling at `temperature` from `seed`.
    pub fn config(&self, temperature: f32, seed: u64, max_rows: Option<usize>) -> RolloutConfig {
        RolloutConfig {
            max_turns: self.max_turns,
            max_new_tokens: self.max_new_tokens,
            max_response_tokens: self.max_turns * (self.max_new_tokens + 1024),
            sampling: model::SamplingConfig { temperature, seed, ..model::SamplingConfig::default() },
            max_rows,
        }
    }
}
