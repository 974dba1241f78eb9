//! A stage's data: shard folders with weights and ability filters, split into training
//! samples and a held-out set by task (so no held-out task is ever trained on, in any
//! stage), optionally ordered easy → hard.
use crate::{Error, Result};
use datasets::{Manifest, Message, Record, SftSample, Trajectory};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mixture {
    pub sources: Vec<SourceSpec>,
    /// Fraction of tasks held out for the eval loss (and for the stage-2 sampling check).
    #[serde(default = "default_heldout")]
    pub heldout: f64,
    #[serde(default)]
    pub order: Order,
}

fn default_heldout() -> f64 {
    0.1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A shard folder of `sft` or `trajectory` records.
    pub path: PathBuf,
    /// Relative sampling weight.
    #[serde(default = "one")]
    pub weight: f64,
    /// Keep only these abilities (SFT `ability`, trajectory `family`); empty keeps all.
    #[serde(default)]
    pub abilities: Vec<String>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// A fresh seeded permutation of each source every epoch.
    #[default]
    Shuffle,
    /// The first epoch easy → hard (stable within a level), then shuffled.
    Difficulty,
}

/// One training sample of either SFT stage.
#[derive(Debug, Clone)]
pub enum Sample {
    Sft(SftSample),
    Trajectory(Trajectory),
}

impl Sample {
    /// What the held-out split is keyed on: the task (several trajectories of one task
    /// go to the same side).
    pub fn task_key(&self) -> &str {
        match self {
            Sample::Sft(s) => &s.id,
            Sample::Trajectory(t) => &t.task_id,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Sample::Sft(s) => &s.id,
            Sample::Trajectory(t) => &t.id,
        }
    }

    fn metadata(&self) -> serde_json::Value {
        match self {
            Sample::Sft(_) => serde_json::Value::Null,
            Sample::Trajectory(t) => serde_json::from_str(&t.metadata).unwrap_or_default(),
        }
    }

    pub fn ability(&self) -> String {
        match self {
            Sample::Sft(s) => s.ability.clone(),
            Sample::Trajectory(_) => self.metadata()["family"].as_str().unwrap_or("trajectory").to_string(),
        }
    }

    /// 0 (easy) .. 1 (hard): SFT's `difficulty`, a trajectory's `metadata.difficulty`
    /// (easy / medium / hard or a number); unknown is 0.5.
    pub fn difficulty(&self) -> f32 {
        match self {
            Sample::Sft(s) => s.difficulty.unwrap_or(0.5),
            Sample::Trajectory(_) => match &self.metadata()["difficulty"] {
                serde_json::Value::String(s) => match s.as_str() {
                    "easy" => 0.0,
                    "medium" => 0.5,
                    "hard" => 1.0,
                    _ => 0.5,
                },
                serde_json::Value::Number(n) => n.as_f64().unwrap_or(0.5) as f32,
                _ => 0.5,
            },
        }
    }

    pub fn messages(&self) -> Vec<Message> {
        match self {
            Sample::Sft(s) => s.messages.clone(),
            Sample::Trajectory(t) => t.messages(),
        }
    }

    /// The text a tokenizer is trained on.
    pub fn text(&self) -> String {
        self.messages().iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")
    }
}

/// A stage's samples after filtering and the held-out split.
pub struct Split {
    /// One entry per source: (name, weight, training samples).
    pub train: Vec<(String, f64, Vec<Sample>)>,
    pub heldout: Vec<Sample>,
}

/// Whether `task_key` is in the held-out `fraction`: a stable hash, the same in every
/// stage and run, so evaluation never sees a trained task.
pub fn heldout(task_key: &str, fraction: f64) -> bool {
    // FNV-1a: stable across Rust versions, unlike std's hasher.
    let h = task_key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    (h % 1_000_000) as f64 / 1e6 < fraction
}

/// Reads the shard folder, whatever kind of SFT record it holds.
pub fn read_samples(path: &std::path::Path) -> Result<Vec<Sample>> {
    let kind = Manifest::read(path)?.kind;
    Ok(match kind.as_str() {
        k if k == SftSample::KIND => datasets::read_all::<SftSample>(path)?.into_iter().map(Sample::Sft).collect(),
        k if k == Trajectory::KIND => datasets::read_all::<Trajectory>(path)?.into_iter().map(Sample::Trajectory).collect(),
        other => {
            return Err(Error::Config {
                path: path.display().to_string(),
                reason: format!("holds `{other}` records; SFT stages train on `sft` or `trajectory` shards"),
            })
        }
    })
}

impl Mixture {
    pub fn load(&self) -> Result<Split> {
        let mut split = Split { train: vec![], heldout: vec![] };
        for spec in &self.sources {
            let name = spec.path.display().to_string();
            if !(spec.weight > 0.0) {
                return Err(Error::Config { path: name, reason: "data.sources.weight: must be positive".into() });
            }
            let mut train = vec![];
            for s in read_samples(&spec.path)? {
                if !spec.abilities.is_empty() && !spec.abilities.contains(&s.ability()) {
                    continue;
                }
                if heldout(s.task_key(), self.heldout) {
                    split.heldout.push(s);
                } else {
                    train.push(s);
                }
            }
            if train.is_empty() {
                return Err(Error::Config { path: name, reason: "no training samples left after the ability filter and the held-out split".into() });
            }
            if self.order == Order::Difficulty {
                train.sort_by(|a, b| a.difficulty().total_cmp(&b.difficulty()));
            }
            split.train.push((name, spec.weight, train));
        }
        Ok(split)
    }
}
