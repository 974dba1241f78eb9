//! Execution-grounded rewards of a finished trajectory. Each part is a number in [0, 1]
//! (or absent when it does not apply to the task) with a weight per task kind; the reward
//! is the weighted mean of the parts that apply, or `format_penalty` when the format is
//! broken (missing `<Analyze>`/`<Answer>`, a `<Code>` without a ```python fence).
//! Presets: `paper` (the paper's equations) and `published` (the released code's).
use crate::rollout::{fenced, own_text, Trajectory};
use anyhow::{bail, Result};
use datasets::RlTask;
use sandbox::{Mode, Sandbox};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const PARTS: [&str; 5] = ["accuracy", "code_success", "turns", "checklist", "judge"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSpec {
    /// "paper" or "published": the weights per task kind; `weights.KIND.PART` overrides one.
    #[serde(default = "paper")]
    pub preset: String,
    /// The whole reward of a trajectory whose format is broken.
    #[serde(default = "minus_one")]
    pub format_penalty: f64,
    /// Numbers in `@name[value]` answers match up to this relative difference.
    #[serde(default = "tol")]
    pub numeric_tol: f64,
    /// kind (qa | datatask | openresearch) → part → weight.
    #[serde(default)]
    pub weights: BTreeMap<String, BTreeMap<String, f64>>,
    pub judge: Option<JudgeSpec>,
}

/// An LLM judge behind an OpenAI-compatible endpoint: scores 0..10, read as /10.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSpec {
    /// e.g. `http://localhost:8000/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    /// Environment variable holding the API key (none: no Authorization header).
    pub api_key_env: Option<String>,
    /// Characters of the trajectory shown to the judge (the end is kept).
    #[serde(default = "judge_chars")]
    pub max_chars: usize,
}

fn paper() -> String {
    "paper".into()
}
fn minus_one() -> f64 {
    -1.0
}
fn tol() -> f64 {
    1e-6
}
fn judge_chars() -> usize {
    12000
}

impl Default for RewardSpec {
    fn default() -> Self {
        Self { preset: paper(), format_penalty: -1.0, numeric_tol: tol(), weights: BTreeMap::new(), judge: None }
    }
}

impl RewardSpec {
    /// The weights of each kind: the preset's, then the config's overrides. Errors name
    /// the field (`reward.…`).
    pub fn resolved(&self) -> Result<BTreeMap<String, BTreeMap<String, f64>>> {
        let preset: &[(&str, &[(&str, f64)])] = match self.preset.as_str() {
            // qa = (acc + interaction) / 2; research = (report + min(T/10, 1) + success) / 3.
            "paper" => &[
                ("qa", &[("accuracy", 1.0), ("code_success", 1.0)]),
                ("datatask", &[("checklist", 1.0), ("code_success", 1.0)]),
                ("openresearch", &[("judge", 1.0), ("turns", 1.0), ("code_success", 1.0)]),
            ],
            // The released environment: qa = mean(exact match, judged quality); the others
            // mean(judged accuracy or report, success rate[, turns]).
            "published" => &[
                ("qa", &[("accuracy", 1.0), ("judge", 1.0)]),
                ("datatask", &[("judge", 1.0), ("code_success", 1.0)]),
                ("openresearch", &[("judge", 1.0), ("code_success", 1.0), ("turns", 1.0)]),
            ],
            other => bail!("reward.preset: {other:?} is not a preset; expected \"paper\" or \"published\""),
        };
        let mut w: BTreeMap<String, BTreeMap<String, f64>> =
            preset.iter().map(|(k, parts)| (k.to_string(), parts.iter().map(|(p, x)| (p.to_string(), *x)).collect())).collect();
        for (kind, parts) in &self.weights {
            let Some(slot) = w.get_mut(kind) else { bail!("reward.weights.{kind}: not a task kind (qa, datatask, openresearch)") };
            for (part, &x) in parts {
                if !PARTS.contains(&part.as_str()) {
                    bail!("reward.weights.{kind}.{part}: not a reward part ({})", PARTS.join(", "));
                }
                if !(x >= 0.0) {
                    bail!("reward.weights.{kind}.{part}: weights are >= 0");
                }
                slot.insert(part.clone(), x);
            }
        }
        Ok(w)
    }

    /// Errors when a kind among `kinds` (those the run has tasks of) weighs the judge
    /// and no judge is configured.
    pub fn check_judge<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let w = self.resolved()?;
        for kind in kinds {
            if self.judge.is_none() && w.get(kind).and_then(|p| p.get("judge")).is_some_and(|&x| x > 0.0) {
                bail!("reward: preset {:?} weighs the LLM judge for {kind} tasks; give [reward.judge] (an OpenAI-compatible \
                       endpoint), set reward.weights.{kind}.judge = 0, or leave {kind} out of data.kinds", self.preset);
            }
        }
        Ok(())
    }
}

/// The parts of one trajectory's reward.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Parts {
    pub format_ok: bool,
    /// All `@name[value]` answers of the `<Answer>` block right (qa with a ground truth).
    pub accuracy: Option<f64>,
    /// Share of cells without `[Error]`; 0 without any cell (no interaction earns
    /// nothing, else skipping the code would beat trying it).
    pub code_success: Option<f64>,
    /// min(cells / 10, 1).
    pub turns: f64,
    /// The task's file check (`judge.file_check`) printed OK in the trajectory's workspace.
    pub checklist: Option<f64>,
    pub judge: Option<f64>,
}

impl Parts {
    pub fn get(&self, part: &str) -> Option<f64> {
        match part {
            "accuracy" => self.accuracy,
            "code_success" => self.code_success,
            "turns" => Some(self.turns),
            "checklist" => self.checklist,
            "judge" => self.judge,
            _ => None,
        }
    }

    /// The weighted mean of the parts that apply, or the format penalty.
    pub fn total(&self, weights: &BTreeMap<String, f64>, format_penalty: f64) -> f64 {
        if !self.format_ok {
            return format_penalty;
        }
        let (mut sum, mut wsum) = (0.0, 0.0);
        for (part, &w) in weights {
            if let (Some(x), true) = (self.get(part), w > 0.0) {
                sum += w * x;
                wsum += w;
            }
        }
        if wsum > 0.0 {
            sum / wsum
        } else {
            0.0
        }
    }
}

/// The text of the last `<Answer>` block (what is graded), if any.
pub fn answer_block(text: &str) -> Option<&str> {
    let i = text.rfind("<Answer>")?;
    let rest = &text[i + "<Answer>".len()..];
    Some(rest.split("</Answer>").next().unwrap_or(rest))
}

/// The format gate: the four required tags in the model's own text, every `<Code>` fenced.
pub fn format_ok(text: &str) -> bool {
    let own = own_text(text);
    ["<Analyze>", "</Analyze>", "<Answer>", "</Answer>"].iter().all(|t| own.contains(t)) && fenced(&own)
}

/// Whether the `<Answer>` block gets every closed-form answer right (None: no ground truth).
pub fn accuracy(text: &str, task: &RlTask, rel_tol: f64) -> Option<bool> {
    sub_answers(text, task, rel_tol).map(|[right, of]| right == of)
}

/// Of a qa task's named sub-answers, how many the `<Answer>` block gets right, and how
/// many there are (None: not a qa task with a ground truth).
pub fn sub_answers(text: &str, task: &RlTask, rel_tol: f64) -> Option<[usize; 2]> {
    let labels: Vec<(String, String)> = serde_json::from_str(task.ground_truth.as_deref()?).ok()?;
    if labels.is_empty() || task.kind != "qa" {
        return None;
    }
    let answer = answer_block(text).unwrap_or("");
    let graded = synth::grade::grade_tol(answer, &labels, rel_tol);
    Some([graded.iter().filter(|&&ok| ok).count(), graded.len()])
}

/// Scores a trajectory (the file check runs in its workspace).
pub fn score(t: &Trajectory, task: &RlTask, spec: &RewardSpec, sandbox: &Sandbox) -> Parts {
    let cells = t.cells();
    let judge_cfg: Option<serde_json::Value> = task.judge.as_deref().and_then(|j| serde_json::from_str(j).ok());
    let checklist = judge_cfg.as_ref().and_then(|j| j["file_check"].as_str()).map(|code| {
        let ok = t.workspace.as_ref().is_some_and(|ws| sandbox.run(ws, code, Mode::Stateless).observation.trim() == "OK");
        f64::from(u8::from(ok))
    });
    Parts {
        format_ok: format_ok(&t.text),
        accuracy: accuracy(&t.text, task, spec.numeric_tol).map(|c| f64::from(u8::from(c))),
        code_success: Some(if cells > 0 { (cells - t.failed_cells) as f64 / cells as f64 } else { 0.0 }),
        turns: (cells as f64 / 10.0).min(1.0),
        checklist,
        judge: spec.judge.as_ref().map(|j| judge(j, task, &t.text).unwrap_or_else(|e| {
            eprintln!("reward.judge: {e}; scored 0");
            0.0
        })),
    }
}

pub const JUDGE_SYSTEM: &str = "You grade a data scientist's work on a task. Read the task and the transcript \
(its code, the outputs inside <Execute>, and the final <Answer>). Reply with one integer from 0 (useless or wrong) \
to 10 (correct, well-supported, clearly reported), and nothing else.";

/// Asks the judge; its first number in 0..=10, divided by 10.
pub fn judge(j: &JudgeSpec, task: &RlTask, text: &str) -> Result<f64> {
    let url = format!("{}/chat/completions", j.base_url.trim_end_matches('/'));
    let start = text.char_indices().rev().nth(j.max_chars).map_or(0, |(i, _)| i);
    let body = serde_json::json!({"model": j.model, "temperature": 0.0, "max_tokens": 8, "messages": [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": format!("# Task\n{}\n\n# Transcript\n{}", task.prompt, &text[start..])}]});
    let mut req = ureq::post(&url).header("Content-Type", "application/json");
    if let Some(var) = &j.api_key_env {
        let key = std::env::var(var).map_err(|_| anyhow::anyhow!("reward.judge.api_key_env: ${var} is not set"))?;
        req = req.header("Authorization", &format!("Bearer {key}"));
    }
    let reply: serde_json::Value = req.send_json(&body).map_err(|e| anyhow::anyhow!("{url}: {e}"))?.body_mut().read_json()?;
    let content = reply["choices"][0]["message"]["content"].as_str().ok_or_else(|| anyhow::anyhow!("{url}: reply has no choices[0].message.content"))?;
    let num: String = content.trim().chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let x: f64 = num.parse().map_err(|_| anyhow::anyhow!("{url}: the judge replied {content:?}, not a score"))?;
    Ok((x / 10.0).clamp(0.0, 1.0))
}
