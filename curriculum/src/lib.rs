//! The `curriculum` crate: the plan of stages (single-ability SFT → multi-ability SFT →
//! RL), each stage's data mixture (which shards, which abilities, what weight, ordered by
//! difficulty or shuffled), the held-out split, what each stage starts from, and the gate
//! a stage must pass before the next one starts. Also the TOML loading (unknown keys
//! rejected with their line, `--set key=value` overrides) that every config shares.
pub mod config;
pub mod mixture;
pub mod plan;

pub use config::load_toml;
pub use mixture::{heldout, Mixture, Order, Sample, SourceSpec, Split};
pub use plan::{Gate, Plan, PlannedStage, StageKind, StageOutcome};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file or override is wrong: the message names the file, key and line.
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error(transparent)]
    Data(#[from] datasets::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
