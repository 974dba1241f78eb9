//! Held-out evaluation on RL tasks (used by `trainer eval` and the RL stage): one
//! rollout per task, and the shares whose trajectory is well formed, whose code runs,
//! and whose answer is right, with InfiAgent-DABench's three accuracies (by question,
//! proportional and uniform by sub-question) and a breakdown by the tasks' level. With
//! several samples a task, pass@k (the unbiased estimator of Chen et al., 2021).
use crate::reward;
use crate::rollout::{self, Env, RolloutConfig, Trajectory};
use anyhow::Result;
use datasets::RlTask;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One task's evaluated rollout (a line of rollouts.jsonl).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub task_id: String,
    /// Which of the task's samples this is (0 with one).
    pub sample: usize,
    pub text: String,
    pub cells: usize,
    pub failed_cells: usize,
    pub finished: bool,
    pub well_formed: bool,
    /// Graded on the `<Answer>` block (qa tasks with a ground truth); None otherwise.
    pub correct: Option<bool>,
    /// Named sub-answers right, of how many (the same tasks as `correct`).
    pub sub_answers: Option<[usize; 2]>,
    /// The task's level (DABench's `level`, synth's `difficulty`), when its metadata has one.
    pub level: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub tasks: usize,
    pub well_formed: f64,
    /// Share with at least one cell and no failed cell.
    pub code_ran: f64,
    pub well_formed_and_ran: f64,
    pub cell_success_rate: f64,
    /// Share of graded tasks answered right (None: no task has a ground truth): DABench's
    /// accuracy by question (ABQ).
    pub correct: Option<f64>,
    /// DABench's PSAQ: the mean over graded tasks of their share of right sub-answers.
    pub sub_answers_proportional: Option<f64>,
    /// DABench's UASQ: right sub-answers over all sub-answers.
    pub sub_answers_uniform: Option<f64>,
    pub mean_cells: f64,
    /// Tasks, well formed and right (as above) per level, when tasks carry one.
    pub by_level: BTreeMap<String, LevelSummary>,
    /// Samples a task (every share above is over all of them: `correct` is pass@1).
    pub samples: usize,
    /// With several samples a task: pass@k for k = 1, 2, 4, ... up to the samples, over
    /// the graded tasks.
    pub pass_at: BTreeMap<usize, f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LevelSummary {
    pub tasks: usize,
    pub well_formed: f64,
    pub correct: Option<f64>,
}

impl Record {
    pub fn of(t: &Trajectory, task: &RlTask, numeric_tol: f64) -> Self {
        Self {
            task_id: task.id.clone(),
            sample: 0,
            text: t.text.clone(),
            cells: t.cells(),
            failed_cells: t.failed_cells,
            finished: t.finished,
            well_formed: t.finished && rollout::well_formed(&t.text),
            correct: reward::accuracy(&t.text, task, numeric_tol),
            sub_answers: reward::sub_answers(&t.text, task, numeric_tol),
            level: serde_json::from_str::<serde_json::Value>(&task.metadata).ok().and_then(|m| {
                let level = if m["level"].is_string() { &m["level"] } else { &m["difficulty"] };
                level.as_str().map(String::from)
            }),
        }
    }
}

pub fn summarize(rs: &[Record]) -> Summary {
    let n = rs.len().max(1) as f64;
    let share = |f: &dyn Fn(&Record) -> bool| rs.iter().filter(|r| f(r)).count() as f64 / n;
    let ran = |r: &Record| r.cells > 0 && r.failed_cells == 0;
    let graded: Vec<bool> = rs.iter().filter_map(|r| r.correct).collect();
    let subs: Vec<[usize; 2]> = rs.iter().filter_map(|r| r.sub_answers).collect();
    let mut levels: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in rs {
        if let Some(l) = &r.level {
            levels.entry(l.clone()).or_default().push(r);
        }
    }
    let by_level = levels
        .into_iter()
        .map(|(l, rs)| {
            let graded: Vec<bool> = rs.iter().filter_map(|r| r.correct).collect();
            let summary = LevelSummary {
                tasks: rs.iter().map(|r| &r.task_id).collect::<std::collections::BTreeSet<_>>().len(),
                well_formed: rs.iter().filter(|r| r.well_formed).count() as f64 / rs.len() as f64,
                correct: (!graded.is_empty()).then(|| graded.iter().filter(|&&c| c).count() as f64 / graded.len() as f64),
            };
            (l, summary)
        })
        .collect();
    // Each task's samples (consecutive records) and right answers; graded tasks only count
    // for pass@k.
    let mut per_task: Vec<(&str, usize, usize, bool)> = vec![];
    for r in rs {
        let right = usize::from(r.correct == Some(true));
        match per_task.last_mut() {
            Some((id, n, c, _)) if *id == r.task_id => {
                *n += 1;
                *c += right;
            }
            _ => per_task.push((&r.task_id, 1, right, r.correct.is_some())),
        }
    }
    let samples = per_task.iter().map(|t| t.1).max().unwrap_or(1);
    let graded_tasks: Vec<_> = per_task.iter().filter(|t| t.3).collect();
    let pass_at = if samples > 1 && !graded_tasks.is_empty() {
        std::iter::successors(Some(1usize), |k| Some(k * 2)).take_while(|&k| k < samples).chain([samples])
            .map(|k| (k, graded_tasks.iter().map(|&&(_, n, c, _)| pass_at_k(n, c, k)).sum::<f64>() / graded_tasks.len() as f64))
            .collect()
    } else {
        BTreeMap::new()
    };
    Summary {
        samples,
        pass_at,
        sub_answers_proportional: (!subs.is_empty()).then(|| subs.iter().map(|[r, of]| *r as f64 / *of as f64).sum::<f64>() / subs.len() as f64),
        sub_answers_uniform: (!subs.is_empty()).then(|| subs.iter().map(|s| s[0]).sum::<usize>() as f64 / subs.iter().map(|s| s[1]).sum::<usize>() as f64),
        by_level,
        tasks: per_task.len(),
        well_formed: share(&|r| r.well_formed),
        code_ran: share(&ran),
        well_formed_and_ran: share(&|r| r.well_formed && ran(r)),
        cell_success_rate: rs.iter().map(|r| r.cells - r.failed_cells).sum::<usize>() as f64 / rs.iter().map(|r| r.cells).sum::<usize>().max(1) as f64,
        correct: (!graded.is_empty()).then(|| graded.iter().filter(|&&c| c).count() as f64 / graded.len() as f64),
        mean_cells: rs.iter().map(|r| r.cells).sum::<usize>() as f64 / n,
    }
}

/// The unbiased estimate of pass@k from `n` samples of which `c` are right: 1 − C(n−c, k) /
/// C(n, k), the chance that k of the n drawn without replacement include a right one.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n - c < k {
        return 1.0;
    }
    // C(n−c, k) / C(n, k) = Π_{i=n−c+1}^{n} (1 − k / i)
    1.0 - (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

/// `samples` rollouts per task with `cfg` (greedy when its temperature is 0), the tasks
/// shared out among `devices` ([`rollout::run_on_devices`]); numbers in answers match up
/// to `numeric_tol` (relative).
pub fn run<B: model::ModelBackend>(
    env: &Env<B>,
    devices: &[B::Device],
    tasks: &[(&RlTask, PathBuf)],
    samples: usize,
    cfg: &RolloutConfig,
    numeric_tol: f64,
    progress: impl Fn(usize) + Sync,
) -> Result<(Vec<Record>, Summary)> {
    let refs: Vec<&RlTask> = tasks.iter().map(|t| t.0).collect();
    let dirs: Vec<PathBuf> = tasks.iter().map(|t| t.1.clone()).collect();
    let (trajs, _) = rollout::run_on_devices(env, devices, &refs, &dirs, samples, cfg, progress)?;
    let records: Vec<Record> = trajs.iter().enumerate().map(|(i, t)| Record { sample: i % samples, ..Record::of(t, refs[t.task], numeric_tol) }).collect();
    let summary = summarize(&records);
    Ok((records, summary))
}
