//! The Inspector: a trajectory is kept only if its format is valid, its answer matches the
//! ground truth and was printed by one of its cells (a model may guess right without its
//! code supporting it), every checklist item holds, and re-running its code in a fresh
//! workspace reproduces every observation. Rejections are counted by reason.
use crate::grade::{correct, parse_answers, values_match};
use crate::questioner::Task;
use crate::solver::Solved;
use sandbox::{Mode, Sandbox, Workspace};

pub const TAGS_REQUIRED: [&str; 4] = ["<Analyze>", "</Analyze>", "<Answer>", "</Answer>"];

/// None when accepted, else the reason; and the seconds spent checking. `solved_in` is
/// the workspace the trajectory ran in (its output files are checked there).
pub fn inspect(task: &Task, s: &Solved, truth: &[(String, String)], sandbox: &Sandbox, solved_in: &Workspace, fresh: &Workspace) -> (Option<&'static str>, f64) {
    let mut secs = 0.0;
    let verdict = check(task, s, truth, sandbox, solved_in, fresh, &mut secs);
    (verdict, secs)
}

fn check(task: &Task, s: &Solved, truth: &[(String, String)], sandbox: &Sandbox, solved_in: &Workspace, fresh: &Workspace, secs: &mut f64) -> Option<&'static str> {
    let names = &task.answer_names;
    if TAGS_REQUIRED.iter().any(|t| !s.response.contains(t)) {
        return Some("format: missing <Analyze> or <Answer>");
    }
    let blocks = s.response.matches("<Code>").count();
    if blocks != s.response.matches("</Code>").count() || blocks != s.cells.len() {
        return Some("format: unbalanced <Code> blocks");
    }
    if s.response.split("<Code>").skip(1).any(|b| !b.trim_start().starts_with("```python")) {
        return Some("format: a <Code> block without a ```python fence");
    }
    let answer = s.response.rsplit("<Answer>").next().unwrap_or("");
    let given: Vec<String> = parse_answers(answer).into_iter().map(|(n, _)| n).collect();
    if names.iter().any(|n| !given.contains(n)) {
        return Some("checklist: a required @answer is missing");
    }
    if !correct(answer, truth) {
        return Some("answer does not match the ground truth");
    }
    if !grounded(answer, &s.cells) {
        return Some("an answer no cell printed");
    }
    if let Some(code) = &task.file_check {
        let ex = sandbox.run(solved_in, code, Mode::Stateless);
        *secs += ex.wall_ms / 1000.0;
        if ex.observation.trim() != "OK" {
            return Some("checklist: the output files do not satisfy the task");
        }
    }
    for (code, obs) in &s.cells {
        let ex = sandbox.run(fresh, code, Mode::Stateless);
        *secs += ex.wall_ms / 1000.0;
        if ex.observation != *obs {
            return Some("re-execution gave a different observation");
        }
    }
    None
}

/// Every `@name[value]` of `answer` appears in some cell's output: printed as `@name[...]`
/// with a matching value, as text (case-insensitive), or as a number that rounds to it at
/// the value's own decimals (a printed 5.0733 grounds 5.07).
pub fn grounded(answer: &str, cells: &[(String, String)]) -> bool {
    let printed: Vec<(String, String)> = cells.iter().flat_map(|(_, obs)| parse_answers(obs)).collect();
    let numbers: Vec<f64> = cells
        .iter()
        .flat_map(|(_, obs)| obs.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == 'E')).filter_map(|w| w.parse::<f64>().ok()))
        .collect();
    parse_answers(answer).iter().all(|(name, value)| {
        let v = value.trim();
        printed.iter().any(|(n, p)| n == name && values_match(p, v))
            || match v.parse::<f64>() {
                Ok(x) => {
                    let decimals = v.split_once('.').map_or(0, |(_, d)| d.len()) as i32;
                    let half = 0.5 * 10f64.powi(-decimals);
                    numbers.iter().any(|&n| (n - x).abs() <= half * (1.0 + 1e-9))
                }
                Err(_) => !v.is_empty() && cells.iter().any(|(_, obs)| obs.to_lowercase().contains(&v.to_lowercase())),
            }
    })
}
