//! The trainer library behind the `trainer` binary: stage configs, the SFT step and loop,
//! the rollout engine, rewards and the GRPO stage, resumable checkpoints, metrics and
//! plots. (The binary's commands live in src/main.rs and the files beside it.)
pub mod adamw;
pub mod cluster;
pub mod estimate;
pub mod evaluate;
pub mod grpo;
pub mod interrupt;
pub mod metrics;
pub mod parallel;
pub mod plots;
pub mod reward;
pub mod rl;
pub mod rl_config;
pub mod rollout;
pub mod run_ckpt;
pub mod sft;
pub mod stage_config;
pub mod step;
