//! The `synth` crate: data-grounded synthesis. Real tables are profiled in the sandbox; the
//! Questioner poses tasks whose ground truth comes from running a reference program; the
//! expert Solver answers them through the five actions with real executions; the Inspector
//! keeps only trajectories that are right, well-formed and reproducible. Output: parquet
//! shards per stage and a statistics report. Deterministic by seed, parallel over tasks.
pub mod grade;
pub mod inspector;
pub mod profile;
pub mod questioner;
pub mod solver;
pub mod teacher;

use datasets::{Message, RlTask, ShardWriter, SftSample, Trajectory};
use profile::Table;
use questioner::{Task, FAMILIES};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use sandbox::{Mode, Sandbox};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("profiling the tables failed: {0}")]
    Profile(String),
    #[error("{0}")]
    Sandbox(#[from] sandbox::Error),
    #[error("{0}")]
    Data(#[from] datasets::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Model(#[from] model::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub tables: PathBuf,
    pub out: PathBuf,
    /// Tasks to pose (each solved once).
    pub tasks: usize,
    pub seed: u64,
    /// Share of trajectories where the expert first errs and recovers.
    pub error_rate: f64,
    /// Solve with an OpenAI-compatible endpoint instead of the built-in expert.
    pub teacher: Option<teacher::TeacherConfig>,
    /// A checkpoint folder whose tokenizer and chat template measure the trajectories'
    /// token lengths for the report.
    pub tokenizer: Option<PathBuf>,
    /// Have the teacher rephrase each task statement (kept only when every name, number
    /// and file survives).
    pub paraphrase: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub tables: usize,
    pub skipped: Vec<profile::Skipped>,
    pub posed: usize,
    pub ground_truth_failed: usize,
    pub accepted: usize,
    /// accepted / posed
    pub accept_rate: f64,
    pub rejected: BTreeMap<String, usize>,
    /// Attempts the Inspector looked at (a local checkpoint makes several a task), and the
    /// reasons it turned attempts down, each counted (`rejected` counts tasks, by their
    /// first attempt's reason).
    pub attempts: usize,
    pub attempts_rejected: BTreeMap<String, usize>,
    /// family → [posed, accepted]
    pub families: BTreeMap<String, [usize; 2]>,
    /// difficulty → [posed, accepted]
    pub difficulties: BTreeMap<String, [usize; 2]>,
    pub recovered_errors: usize,
    /// Task statements the teacher rephrased (and the rephrasings that lost something).
    pub paraphrased: usize,
    pub paraphrases_rejected: usize,
    /// `<Code>` turns per accepted trajectory → count.
    pub turns: BTreeMap<usize, usize>,
    pub mean_response_chars: f64,
    /// Tokens per accepted trajectory (min, median, max, mean), when a tokenizer was given.
    pub trajectory_tokens: Option<[f64; 4]>,
    pub single_ability_samples: usize,
    pub seconds: f64,
    /// Wall time of every sandbox cell, summed over the tasks running in parallel.
    pub sandbox_seconds: f64,
    /// Tasks solved at once (rayon threads).
    pub parallel_tasks: usize,
}

struct Outcome {
    task: Task,
    truth: Option<Vec<(String, String)>>,
    solved: Option<solver::Solved>,
    rejection: Option<&'static str>,
    /// Why each attempt inspected before the kept one (or all, when none was) was rejected.
    turned_down: Vec<&'static str>,
    /// Every cell of this task: reference, solver and re-execution.
    sandbox_secs: f64,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source }
}

/// Poses `n` tasks over the profiled tables, deterministically from `seed`.
pub fn pose_tasks(tables: &[Table], n: usize, seed: u64) -> Vec<Task> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tasks = vec![];
    let mut attempts = 0;
    let pairs = questioner::join_pairs(tables);
    while tasks.len() < n && attempts < n * 20 && !tables.is_empty() {
        attempts += 1;
        let id = format!("synth-{seed}-{}", tasks.len());
        // One draw in eleven is a join, when the tables have any.
        let posed = if !pairs.is_empty() && rng.random_range(0..=FAMILIES.len()) == FAMILIES.len() {
            let (a, b, key) = pairs.choose(&mut rng).unwrap();
            questioner::pose_join(&tables[*a], &tables[*b], key, &mut rng, id)
        } else {
            let t = tables.choose(&mut rng).unwrap();
            let family = *FAMILIES.choose(&mut rng).unwrap();
            questioner::pose(family, t, &mut rng, id)
        };
        tasks.extend(posed);
    }
    tasks
}

/// The tasks' ground truths (in parallel), then `batch` solving all that have one at once,
/// then the Inspector on each task's attempts in order until one is accepted (the first
/// attempt's reason is counted when none is). `inspected()` after each task.
fn solve_in_batch(cfg: &SynthConfig, sandbox: &Sandbox, tasks: Vec<Task>, batch: &dyn BatchSolver, inspected: &(dyn Fn() + Sync)) -> Result<Vec<Outcome>> {
    let files = |task: &Task| -> Vec<PathBuf> { task.files().iter().map(|f| cfg.tables.join(f)).collect() };
    let truths: Vec<(Task, Option<Vec<(String, String)>>, f64)> = tasks
        .into_par_iter()
        .map(|task| {
            let paths = files(&task);
            let ws = sandbox.workspace_with_files(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
            let (truth, secs) = ground_truth(&task, sandbox, &ws);
            Ok((task, truth, secs))
        })
        .collect::<Result<_>>()?;
    let posed: Vec<Posed> = truths
        .iter()
        .filter(|(_, truth, _)| truth.is_some())
        .map(|(task, _, _)| Posed { id: &task.id, prompt: prompt(task, &cfg.tables), tables: &cfg.tables, files: task.files() })
        .collect();
    let mut attempts = batch.solve(&posed, sandbox).map_err(Error::Invalid)?.into_iter();
    drop(posed);
    let work: Vec<_> = truths.into_iter().map(|(task, truth, secs)| {
        let tries = if truth.is_some() { attempts.next().unwrap_or_default() } else { vec![] };
        (task, truth, secs, tries)
    }).collect();
    work.into_par_iter()
        .map(|(task, truth, secs, tries)| {
            let Some(truth) = truth else {
                inspected();
                return Ok(Outcome { task, truth: None, solved: None, rejection: None, turned_down: vec![], sandbox_secs: secs });
            };
            let (mut turned_down, mut sandbox_secs) = (vec![], secs);
            let paths = files(&task);
            for (solved, ws) in tries {
                let fresh = sandbox.workspace_with_files(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
                let (rejection, check_secs) = inspector::inspect(&task, &solved, &truth, sandbox, &ws, &fresh);
                sandbox_secs += check_secs;
                match rejection {
                    None => {
                        inspected();
                        return Ok(Outcome { task, truth: Some(truth), solved: Some(solved), rejection: None, turned_down, sandbox_secs });
                    }
                    Some(reason) => turned_down.push(reason),
                }
            }
            inspected();
            let first = turned_down.first().copied().unwrap_or("solver: no attempt");
            Ok(Outcome { task, truth: Some(truth), solved: None, rejection: Some(first), turned_down, sandbox_secs })
        })
        .collect()
}

/// The reference program's answers (None when it fails or misses a name), and its seconds.
pub fn ground_truth(task: &Task, sandbox: &Sandbox, ws: &sandbox::Workspace) -> (Option<Vec<(String, String)>>, f64) {
    let ex = sandbox.run(ws, &task.reference, Mode::Stateless);
    let answers = grade::parse_answers(&ex.observation);
    let ok = ex.is_ok() && task.answer_names.iter().all(|n| answers.iter().any(|(a, _)| a == n));
    (ok.then_some(answers), ex.wall_ms / 1000.0)
}

fn prompt(task: &Task, tables_dir: &Path) -> String {
    let files: Vec<(String, u64)> = task
        .files()
        .into_iter()
        .map(|f| {
            let bytes = std::fs::metadata(tables_dir.join(&f)).map(|m| m.len()).unwrap_or(0);
            (f, bytes)
        })
        .collect();
    datasets::import::deepanalyze_prompt(&task.instruction, &files)
}

/// A single-ability sample about one table: the DeepAnalyze prompt over its file, and the answer.
fn table_sample(tables_dir: &Path, t: &Table, prefix: &str, ability: &str, question: &str, answer: String, difficulty: f32) -> SftSample {
    let bytes = std::fs::metadata(tables_dir.join(&t.file)).map(|m| m.len()).unwrap_or(0);
    SftSample {
        id: format!("{prefix}-{}", t.label()),
        ability: ability.into(),
        source: "synth".into(),
        messages: vec![
            Message::new("user", datasets::import::deepanalyze_prompt(question, &[(t.file.clone(), bytes)])),
            Message::new("assistant", answer),
        ],
        difficulty: Some(difficulty),
    }
}

/// Single-ability samples (schema and structure understanding) straight from the profile.
fn schema_samples(tables: &[Table], tables_dir: &Path) -> Vec<SftSample> {
    tables
        .iter()
        .map(|t| {
            let q = format!("Describe the structure of {}: its size, and each column's type and missing values.", t.label());
            let cols: Vec<String> = t.columns.iter().map(|c| format!("- `{}`: {} ({}), {} missing, {} distinct", c.name, c.dtype, c.kind, c.missing, c.unique)).collect();
            let answer = format!(
                "<Analyze>\nA structural summary needs the row count and, per column, its type, how many values are missing and how varied it is.\n</Analyze>\n<Answer>\n{} has {} rows and {} columns{}.\n{}\n</Answer>",
                t.label(), t.rows, t.columns.len(),
                if t.keys.is_empty() { String::new() } else { format!("; {} identif{} each row", t.keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "), if t.keys.len() == 1 { "ies" } else { "y" }) },
                cols.join("\n")
            );
            table_sample(tables_dir, t, "schema", "schema-understanding", &q, answer, 0.0)
        })
        .collect()
}

const TABLE_QA_PY: &str = include_str!("../python/table_qa.py");

/// Single-ability table QA with reasoning: a few rows inline, the values read off one by
/// one, the total and the largest. Accepted only when the listed values re-add (in Rust)
/// to the total pandas computed.
fn table_qa_samples(sandbox: &Sandbox, ws: &sandbox::Workspace) -> Result<Vec<SftSample>> {
    let limits = sandbox::Limits { timeout: std::time::Duration::from_secs(300), max_output_bytes: 64 << 20, ..Default::default() };
    let ex = sandbox.run_with(ws, &format!("{}\n{TABLE_QA_PY}", profile::READ_TABLES_PY), Mode::Stateless, &limits);
    let items: Vec<serde_json::Value> = serde_json::from_str(&ex.observation).map_err(|_| Error::Profile(ex.observation.clone()))?;
    let mut out = vec![];
    for it in items {
        let (Some(col), Some(total), Some(text), Some(vals)) =
            (it["column"].as_str(), it["total"].as_str(), it["table_text"].as_str(), it["values"].as_array()) else { continue };
        let values: Vec<f64> = vals.iter().filter_map(|v| v.as_str()?.parse().ok()).collect();
        let label = match it["table"].as_str() { Some(t) => format!("{}:{t}", it["file"].as_str().unwrap_or("")), None => it["file"].as_str().unwrap_or("").to_string() };
        if (values.iter().sum::<f64>() - total.parse::<f64>().unwrap_or(f64::NAN)).abs() > 0.006 {
            continue;
        }
        let argmax = it["argmax_row"].as_u64().unwrap_or(0);
        let listed: Vec<String> = values.iter().map(|v| format!("{v}")).collect();
        let name = questioner::slug(col);
        let q = format!("Here are the first {} rows of {label}:\n\n{text}\n\nWhat is the total of `{col}` over these rows, and which row (counting from 1) has the largest `{col}`?\nAnswer format: @total_{name}[value] rounded to two decimal places, @max_row[row number].", values.len());
        let a = format!("<Analyze>\nReading the `{col}` column row by row: {}. Adding them gives {total}. Looking closer for the largest, row {argmax} holds {}, and no later row is larger; checking the boundaries, the first row counts as row 1.\n</Analyze>\n<Answer>\n@total_{name}[{total}]\n@max_row[{argmax}]\n</Answer>",
            listed.join(", "), listed.get(argmax.saturating_sub(1) as usize).cloned().unwrap_or_default());
        out.push(SftSample {
            id: format!("table-qa-{label}-{col}"),
            ability: "table-qa".into(),
            source: "synth".into(),
            messages: vec![Message::new("user", q), Message::new("assistant", a)],
            difficulty: Some(0.3),
        });
    }
    Ok(out)
}

/// Single-ability code writing: a function over the table, kept only when it runs in the
/// sandbox on the real table and agrees with a loop-based computation of the same thing.
fn code_samples(sandbox: &Sandbox, ws: &sandbox::Workspace, tables: &[Table], tables_dir: &Path) -> Result<Vec<SftSample>> {
    let mut out = vec![];
    for t in tables {
        let Some(g) = t.categorical().find(|c| c.unique <= 12) else { continue };
        let Some(v) = t.numeric().find(|c| !t.keys.contains(&c.name) && c.unique > 2) else { continue };
        let fname = format!("mean_{}_by_{}", questioner::slug(&v.name), questioner::slug(&g.name));
        let (qg, qv) = (questioner::py(&g.name), questioner::py(&v.name));
        let func = format!("def {fname}(df):\n    \"\"\"Mean of `{}` per `{}` value, missing values skipped, rounded to 2 decimals.\"\"\"\n    return df.groupby({qg})[{qv}].mean().round(2).to_dict()", v.name, g.name);
        let check = format!(
            "import pandas as pd\n{}\n{func}\ngot = {fname}(df)\nsums = {{}}\nfor k, x in zip(df[{qg}], df[{qv}]):\n    if pd.notna(k) and pd.notna(x):\n        s = sums.setdefault(k, [0.0, 0])\n        s[0] += float(x)\n        s[1] += 1\nwant = {{k: round(a / n, 2) for k, (a, n) in sums.items()}}\nok = set(got) == set(want) and all(abs(got[k] - want[k]) < 0.006 for k in want)\nprint('OK' if ok else 'MISMATCH %r %r' % (got, want))",
            questioner::load_code(t));
        if sandbox.run(ws, &check, Mode::Stateless).observation.trim() != "OK" {
            continue;
        }
        let q = format!("Write a Python function `{fname}(df)` that takes the DataFrame of {} and returns a dict mapping each `{}` value to the mean `{}`, skipping missing values and rounding to two decimals.", t.label(), g.name, v.name);
        let a = format!("<Analyze>\nGrouping by `{}` and averaging `{}` does it: pandas' mean skips missing values by itself; rounding then `to_dict()` gives plain keys and numbers. Checking the boundaries: a group whose values are all missing would come out as NaN, which is what the mean of nothing is.\n</Analyze>\n<Answer>\n```python\n{func}\n```\n</Answer>", g.name, v.name);
        out.push(table_sample(tables_dir, t, "code", "code", &q, a, 0.3));
    }
    Ok(out)
}

/// Single-ability code grounding: one cell that loads the named file and computes on the
/// named column, its observation, the answer. Short samples whose only hard part is using
/// the names the prompt gives (a small model otherwise writes names it saw in training);
/// kept only when the cell runs cleanly.
fn grounding_samples(sandbox: &Sandbox, ws: &sandbox::Workspace, tables: &[Table], tables_dir: &Path) -> Vec<SftSample> {
    let mut jobs = vec![];
    for t in tables {
        for c in &t.columns {
            let (q, name) = (questioner::py(&c.name), questioner::slug(&c.name));
            jobs.push((t, c, format!("How many values of `{}` in {} are missing?", c.name, t.label()),
                       format!("@missing_{name}[value] where \"value\" is an integer."),
                       format!("print('@missing_{name}[%d]' % df[{q}].isna().sum())")));
            if t.numeric().any(|n| n.name == c.name) {
                jobs.push((t, c, format!("What is the largest `{}` in {}?", c.name, t.label()),
                           format!("@max_{name}[value] where \"value\" is a number rounded to two decimal places."),
                           format!("print('@max_{name}[%.2f]' % df[{q}].max())")));
            }
        }
    }
    jobs.par_iter()
        .filter_map(|(t, c, question, format, stmt)| {
            let code = format!("import pandas as pd\n{}\n{stmt}", questioner::load_code(t));
            let obs = sandbox.run(ws, &code, Mode::Stateless).observation;
            if obs.starts_with("[Error]") || !obs.trim_start().starts_with('@') {
                return None;
            }
            let q = format!("{question}\nAnswer format: {format}");
            let a = format!("<Analyze>\nThe task: {question} I load {} and compute it on `{}` directly.\n</Analyze>\n<Code>\n```python\n{code}\n```\n</Code>\n<Execute>\n{obs}\n</Execute>\n<Answer>\n{}\n</Answer>",
                            t.file, c.name, obs.trim());
            let mut s = table_sample(tables_dir, t, "grounding", "code-grounding", &q, a, 0.1);
            s.id = format!("grounding-{}-{}-{}", t.label(), questioner::slug(&c.name), if stmt.contains("@max_") { "max" } else { "missing" });
            Some(s)
        })
        .collect()
}

/// A posed task as a batch solver sees it: the prompt, and its files in `tables`.
pub struct Posed<'a> {
    pub id: &'a str,
    pub prompt: String,
    pub tables: &'a Path,
    pub files: Vec<String>,
}

/// Solves every posed task in one call (a local checkpoint through the trainer's rollout
/// engine: batched decoding, each trajectory in its own workspace). For each task, its
/// attempts in order, each with the workspace it acted in; the first the Inspector
/// accepts is kept (rejection sampling).
pub trait BatchSolver: Sync {
    fn solve(&self, tasks: &[Posed], sandbox: &Sandbox) -> std::result::Result<Vec<Vec<(solver::Solved, sandbox::Workspace)>>, String>;
    /// The `source` its trajectories are written with.
    fn source(&self) -> &str;
}

/// Runs the whole pipeline; `progress(done, total)` after each task.
pub fn synthesize(cfg: &SynthConfig, sandbox: &Sandbox, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<Report> {
    synthesize_with(cfg, sandbox, None, progress)
}

/// [`synthesize`], the tasks solved by `batch` when given (instead of the expert or the
/// endpoint); `progress` then counts inspected tasks.
pub fn synthesize_with(cfg: &SynthConfig, sandbox: &Sandbox, batch: Option<&dyn BatchSolver>, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<Report> {
    let start = Instant::now();
    if !cfg.tables.is_dir() {
        return Err(Error::Invalid(format!("--tables {}: not a folder", cfg.tables.display())));
    }
    // One copy of all the tables serves the profile and the single-ability samples.
    let all_tables = sandbox.workspace(Some(&cfg.tables))?;
    let prof = profile::profile(sandbox, &all_tables)?;
    let mut tasks = pose_tasks(&prof.tables, cfg.tasks, cfg.seed);
    let (mut paraphrased, mut paraphrases_rejected) = (0, 0);
    if let (true, Some(t)) = (cfg.paraphrase, &cfg.teacher) {
        let results: Vec<Option<String>> = tasks
            .par_iter()
            .map(|task| {
                let (statement, format) = task.instruction.split_once("\nAnswer format:").unwrap_or((&task.instruction, ""));
                teacher::paraphrase(statement, t)
                    .map(|p| p.map(|p| if format.is_empty() { p } else { format!("{p}\nAnswer format:{format}") }))
                    .unwrap_or_else(|e| { eprintln!("synth: paraphrase of {}: {e}", task.id); None })
            })
            .collect();
        for (task, p) in tasks.iter_mut().zip(results) {
            match p {
                Some(p) => { task.instruction = p; paraphrased += 1 }
                None => paraphrases_rejected += 1,
            }
        }
    }
    let total = tasks.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let outcomes: Vec<Outcome> = match batch {
        Some(b) => solve_in_batch(cfg, sandbox, tasks, b, &|| progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, total))?,
        None => tasks
        .into_par_iter()
        .enumerate()
        .map(|(i, task)| {
            let paths: Vec<PathBuf> = task.files().iter().map(|f| cfg.tables.join(f)).collect();
            let files: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
            let run = || -> Result<Outcome> {
                let ws = sandbox.workspace_with_files(&files)?;
                let (truth, truth_secs) = ground_truth(&task, sandbox, &ws);
                let Some(truth) = truth else {
                    return Ok(Outcome { task, truth: None, solved: None, rejection: None, turned_down: vec![], sandbox_secs: truth_secs });
                };
                let mut rng = StdRng::seed_from_u64(cfg.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let solved = match &cfg.teacher {
                    None => solver::solve(&task, sandbox, &ws, rng.random_bool(cfg.error_rate)),
                    Some(t) => match teacher::teach(&prompt(&task, &cfg.tables), t, sandbox, &ws) {
                        Ok(s) => s,
                        Err(reason) => {
                            eprintln!("synth: {}: {reason}", task.id);
                            return Ok(Outcome { task, truth: Some(truth), solved: None, rejection: Some("teacher: the endpoint failed"), turned_down: vec![], sandbox_secs: truth_secs });
                        }
                    },
                };
                let fresh = sandbox.workspace_with_files(&files)?;
                let (rejection, check_secs) = inspector::inspect(&task, &solved, &truth, sandbox, &ws, &fresh);
                let sandbox_secs = truth_secs + solved.sandbox_secs + check_secs;
                Ok(Outcome { task, truth: Some(truth), solved: Some(solved), rejection, turned_down: rejection.into_iter().collect(), sandbox_secs })
            };
            let out = run();
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, total);
            out
        })
        .collect::<Result<_>>()?,
    };

    std::fs::create_dir_all(&cfg.out).map_err(|e| io(&cfg.out, e))?;
    let mut report = Report { tables: prof.tables.len(), skipped: prof.skipped.clone(), posed: total, paraphrased, paraphrases_rejected, ..Default::default() };
    let mut traj = ShardWriter::<Trajectory>::create(&cfg.out.join("trajectories"), datasets::import::DEFAULT_SHARD_BYTES)?;
    let mut rl = ShardWriter::<RlTask>::create(&cfg.out.join("rl_tasks"), datasets::import::DEFAULT_SHARD_BYTES)?;
    let ws_dir = cfg.out.join("rl_tasks").join("_workspaces");
    let mut chars = 0usize;
    for o in &outcomes {
        report.sandbox_seconds += o.sandbox_secs;
        report.attempts += o.turned_down.len() + usize::from(o.rejection.is_none() && o.solved.is_some());
        for reason in &o.turned_down {
            *report.attempts_rejected.entry(reason.to_string()).or_default() += 1;
        }
        let fam = report.families.entry(o.task.family.into()).or_default();
        fam[0] += 1;
        report.difficulties.entry(o.task.difficulty.into()).or_default()[0] += 1;
        let Some(truth) = &o.truth else {
            report.ground_truth_failed += 1;
            continue;
        };
        // Every task with a ground truth is an RL task, with its tables as workspace.
        let stem = o.task.files().join("+").replace(['.', '/'], "_");
        let dst = ws_dir.join(&stem);
        if !dst.exists() {
            std::fs::create_dir_all(&dst).map_err(|e| io(&dst, e))?;
            for f in o.task.files() {
                let src = cfg.tables.join(&f);
                std::fs::copy(&src, dst.join(&f)).map_err(|e| io(&src, e))?;
            }
        }
        let meta = serde_json::json!({"family": o.task.family, "difficulty": o.task.difficulty, "table": o.task.table.label(),
                                      "checklist": o.task.checklist});
        let kind = questioner::kind_of(o.task.family);
        let judge = match kind {
            "openresearch" => serde_json::json!({"method": "report", "answers": "dabench",
                "dimensions": ["usefulness", "richness", "soundness", "interpretability", "readability"]}),
            _ => serde_json::json!({"method": "dabench"}),
        };
        // Data tasks carry the Inspector's file check: RL runs it in the rollout's workspace.
        let mut judge = judge;
        if let Some(code) = &o.task.file_check {
            judge["file_check"] = code.clone().into();
        }
        rl.write(RlTask {
            id: o.task.id.clone(),
            kind: kind.into(),
            prompt: prompt(&o.task, &cfg.tables),
            workspace: format!("_workspaces/{stem}"),
            files: o.task.files(),
            ground_truth: Some(serde_json::to_string(truth).unwrap()),
            judge: Some(judge.to_string()),
            source: "synth".into(),
            metadata: meta.to_string(),
        })?;
        if let Some(reason) = o.rejection {
            *report.rejected.entry(reason.into()).or_default() += 1;
            continue;
        }
        let solved = o.solved.as_ref().unwrap();
        report.accepted += 1;
        report.families.get_mut(o.task.family).unwrap()[1] += 1;
        report.difficulties.get_mut(o.task.difficulty).unwrap()[1] += 1;
        report.recovered_errors += usize::from(solved.recovered_error);
        *report.turns.entry(solved.cells.len()).or_default() += 1;
        chars += solved.response.len();
        traj.write(Trajectory {
            id: o.task.id.clone(),
            task_id: o.task.id.clone(),
            system: None,
            prompt: prompt(&o.task, &cfg.tables),
            response: solved.response.clone(),
            reward: Some(1.0),
            source: match (batch, &cfg.teacher) {
                (Some(b), _) => b.source(),
                (None, Some(_)) => "synth-teacher",
                (None, None) => "synth-expert",
            }
            .into(),
            metadata: serde_json::json!({"family": o.task.family, "difficulty": o.task.difficulty,
                                         "recovered_error": solved.recovered_error, "turns": solved.cells.len()}).to_string(),
        })?;
    }
    traj.finish()?;
    if let Some(dir) = &cfg.tokenizer {
        let tok = model::Tokenizer::from_dir(dir)?;
        let template = model::ChatTemplate::from_dir(dir, &tok.config)?;
        let st = datasets::SampleTokenizer { tokenizer: &tok, template: &template };
        let rows: Vec<Trajectory> = datasets::read_all(&cfg.out.join("trajectories"))?;
        let mut lens: Vec<usize> = rows.par_iter().map(|t| st.trajectory(t).map(|x| x.len())).collect::<datasets::Result<_>>()?;
        lens.sort_unstable();
        if !lens.is_empty() {
            let mean = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
            report.trajectory_tokens = Some([lens[0] as f64, lens[lens.len() / 2] as f64, lens[lens.len() - 1] as f64, mean]);
        }
    }
    rl.finish()?;
    let mut sft = ShardWriter::<SftSample>::create(&cfg.out.join("sft_single"), datasets::import::DEFAULT_SHARD_BYTES)?;
    let single = schema_samples(&prof.tables, &cfg.tables)
        .into_iter()
        .chain(table_qa_samples(sandbox, &all_tables)?)
        .chain(code_samples(sandbox, &all_tables, &prof.tables, &cfg.tables)?)
        .chain(grounding_samples(sandbox, &all_tables, &prof.tables, &cfg.tables));
    for s in single {
        sft.write(s)?;
        report.single_ability_samples += 1;
    }
    sft.finish()?;
    report.mean_response_chars = chars as f64 / report.accepted.max(1) as f64;
    report.accept_rate = report.accepted as f64 / report.posed.max(1) as f64;
    report.seconds = start.elapsed().as_secs_f64();
    report.parallel_tasks = rayon::current_num_threads();
    let path = cfg.out.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).map_err(|e| io(&path, e))?;
    Ok(report)
}
