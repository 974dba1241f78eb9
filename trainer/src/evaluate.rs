//! Held-out evaluation on RL tasks (used by `trainer eval` and the RL stage): one
//! rollout per task, and the shares whose trajectory is well formed, whose code runs,
//! and whose answer is right.
use crate::reward;
use crate::rollout::{self, Env, RolloutConfig, Trajectory};
use anyhow::Result;
use datasets::RlTask;
use serde::Serialize;
use std::path::PathBuf;

/// One task's evaluated rollout (a line of rollouts.jsonl).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub task_id: String,
    pub text: String,
    pub cells: usize,
    pub failed_cells: usize,
    pub finished: bool,
    pub well_formed: bool,
    /// Graded on the `<Answer>` block (qa tasks with a ground truth); None otherwise.
    pub correct: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub tasks: usize,
    pub well_formed: f64,
    /// Share with at least one cell and no failed cell.
    pub code_ran: f64,
    pub well_formed_and_ran: f64,
    pub cell_success_rate: f64,
    /// Share of graded tasks answered right (None: no task has a ground truth).
    pub correct: Option<f64>,
    pub mean_cells: f64,
}

impl Record {
    pub fn of(t: &Trajectory, task: &RlTask, numeric_tol: f64) -> Self {
        Self {
            task_id: task.id.clone(),
            text: t.text.clone(),
            cells: t.cells(),
            failed_cells: t.failed_cells,
            finished: t.finished,
            well_formed: t.finished && rollout::well_formed(&t.text),
            correct: reward::accuracy(&t.text, task, numeric_tol),
        }
    }
}

pub fn summarize(rs: &[Record]) -> Summary {
    let n = rs.len().max(1) as f64;
    let share = |f: &dyn Fn(&Record) -> bool| rs.iter().filter(|r| f(r)).count() as f64 / n;
    let ran = |r: &Record| r.cells > 0 && r.failed_cells == 0;
    let graded: Vec<bool> = rs.iter().filter_map(|r| r.correct).collect();
    Summary {
        tasks: rs.len(),
        well_formed: share(&|r| r.well_formed),
        code_ran: share(&ran),
        well_formed_and_ran: share(&|r| r.well_formed && ran(r)),
        cell_success_rate: rs.iter().map(|r| r.cells - r.failed_cells).sum::<usize>() as f64 / rs.iter().map(|r| r.cells).sum::<usize>().max(1) as f64,
        correct: (!graded.is_empty()).then(|| graded.iter().filter(|&&c| c).count() as f64 / graded.len() as f64),
        mean_cells: rs.iter().map(|r| r.cells).sum::<usize>() as f64 / n,
    }
}

/// One rollout per task with `cfg` (greedy when its temperature is 0), the tasks shared
/// out among `devices` ([`rollout::run_on_devices`]); numbers in answers match up to
/// `numeric_tol` (relative).
pub fn run<B: model::ModelBackend>(
    env: &Env<B>,
    devices: &[B::Device],
    tasks: &[(&RlTask, PathBuf)],
    cfg: &RolloutConfig,
    numeric_tol: f64,
    progress: impl Fn(usize) + Sync,
) -> Result<(Vec<Record>, Summary)> {
    let refs: Vec<&RlTask> = tasks.iter().map(|t| t.0).collect();
    let dirs: Vec<PathBuf> = tasks.iter().map(|t| t.1.clone()).collect();
    let (trajs, _) = rollout::run_on_devices(env, devices, &refs, &dirs, 1, cfg, progress)?;
    let records: Vec<Record> = trajs.iter().map(|t| Record::of(t, refs[t.task], numeric_tol)).collect();
    let summary = summarize(&records);
    Ok((records, summary))
}
