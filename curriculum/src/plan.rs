//! The curriculum: stages in order, each with its own stage config, starting from the
//! previous stage's final checkpoint, and a gate its outcome must pass before the next.
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageKind {
    SftSingle,
    SftMulti,
    Rl,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::SftSingle => "sft-single",
            StageKind::SftMulti => "sft-multi",
            StageKind::Rl => "rl",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(rename = "stage")]
    pub stages: Vec<PlannedStage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedStage {
    pub kind: StageKind,
    /// The stage's own config (TOML), relative to the working directory.
    pub config: PathBuf,
    /// Start from the previous stage's final checkpoint (default for every stage but the
    /// first); false keeps the stage config's own `model` section.
    #[serde(default = "yes")]
    pub from_previous: bool,
    #[serde(default)]
    pub gate: Gate,
}

fn yes() -> bool {
    true
}

/// What a stage's outcome must satisfy before the next stage starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// The final held-out loss must be at most this.
    pub max_eval_loss: Option<f64>,
    /// The held-out loss must fall by at least this fraction from the first evaluation
    /// (before any update) to the last.
    pub min_eval_drop: Option<f64>,
    /// RL: the held-out success rate must rise by at least this (absolute; 0 = not fall).
    pub min_success_gain: Option<f64>,
}

/// What a finished stage reports to the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageOutcome {
    pub kind: StageKind,
    pub final_dir: PathBuf,
    pub first_eval_loss: Option<f64>,
    pub last_eval_loss: Option<f64>,
    pub steps: u64,
    /// RL: held-out success rate before the first update and after the last.
    #[serde(default)]
    pub first_success: Option<f64>,
    #[serde(default)]
    pub last_success: Option<f64>,
}

impl Plan {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let plan: Plan = crate::load_toml(path, overrides)?;
        if plan.stages.is_empty() {
            return Err(Error::Config { path: path.display().to_string(), reason: "the plan has no [[stage]]".into() });
        }
        Ok(plan)
    }
}

impl Gate {
    /// Ok, or the reason the stage did not pass.
    pub fn check(&self, o: &StageOutcome) -> std::result::Result<(), String> {
        if let Some(max) = self.max_eval_loss {
            match o.last_eval_loss {
                Some(l) if l <= max => {}
                Some(l) => return Err(format!("gate.max_eval_loss: held-out loss {l:.4} > {max}")),
                None => return Err("gate.max_eval_loss: the stage ran no evaluation".into()),
            }
        }
        if let Some(drop) = self.min_eval_drop {
            match (o.first_eval_loss, o.last_eval_loss) {
                (Some(a), Some(b)) if (a - b) / a >= drop => {}
                (Some(a), Some(b)) => {
                    return Err(format!("gate.min_eval_drop: held-out loss fell {:.1}% ({a:.4} → {b:.4}), needs {:.1}%", 100.0 * (a - b) / a, 100.0 * drop))
                }
                _ => return Err("gate.min_eval_drop: the stage needs an evaluation before and after training".into()),
            }
        }
        if let Some(gain) = self.min_success_gain {
            match (o.first_success, o.last_success) {
                (Some(a), Some(b)) if b - a >= gain => {}
                (Some(a), Some(b)) => return Err(format!("gate.min_success_gain: held-out success went {a:.3} → {b:.3}, needs +{gain}")),
                _ => return Err("gate.min_success_gain: the stage needs a held-out evaluation before and after training".into()),
            }
        }
        Ok(())
    }
}
