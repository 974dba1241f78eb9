//! The expert Solver: acts through the five actions the way an analyst would: look at the
//! file, understand it, compute, check, answer; in some trajectories it first uses a wrong
//! column name and recovers from the error it sees. Every `<Execute>` is the sandbox's real
//! output for that code, run the way the published environment runs it (fresh per cell).
use crate::questioner::{py, Task};
use crate::grade::parse_answers;
use sandbox::{Mode, Sandbox, Workspace};

pub struct Solved {
    pub response: String,
    /// Each `<Code>` block's code and the observation it got.
    pub cells: Vec<(String, String)>,
    pub recovered_error: bool,
    /// Seconds spent inside the sandbox.
    pub sandbox_secs: f64,
}

fn cell(code: &str) -> String {
    format!("<Code>\n```python\n{code}\n```\n</Code>\n")
}

pub fn solve(task: &Task, sandbox: &Sandbox, ws: &Workspace, with_error: bool) -> Solved {
    let t = &task.table;
    let load = task.load_code();
    let mut out = Solved { response: String::new(), cells: vec![], recovered_error: false, sandbox_secs: 0.0 };
    let run = |code: &str, out: &mut Solved| -> String {
        let ex = sandbox.run(ws, code, Mode::Stateless);
        out.sandbox_secs += ex.wall_ms / 1000.0;
        out.cells.push((code.to_string(), ex.observation.clone()));
        out.response += &cell(code);
        out.response += &format!("<Execute>\n{}\n</Execute>\n", ex.observation);
        ex.observation
    };
    out.response += &format!(
        "<Analyze>\nThe task: {} Before computing anything I will look at {}: its shape, column names and types, and a few rows, so the code uses the exact column names and handles missing values correctly.\n</Analyze>\n",
        task.instruction.lines().next().unwrap_or(""), task.other.as_ref().map_or(t.label(), |o| format!("{} and {}", t.label(), o.label()))
    );
    let mut look = match &task.other {
        Some(_) => "for d in (df, df2):\n    print(d.shape)\n    print(d.dtypes)\n    print(d.head())",
        None => "print(df.shape)\nprint(df.dtypes)\nprint(df.head())",
    }
    .to_string();
    // The column the task is about: its missing count and range are printed, so that every
    // number the <Understand> states is one the model can read (none from memory).
    let focus = t.columns.iter().find(|c| c.name == task.focus);
    if let Some(c) = focus {
        let s = format!("df[{}]", py(&c.name));
        look += &format!("\nprint('missing:', {s}.isna().sum()");
        look += &if c.min.is_some() { format!(", 'range:', {s}.min(), {s}.max())") } else { ")".into() };
    }
    let obs = run(&format!("import pandas as pd\n{load}\n{look}"), &mut out);
    let printed: Vec<&str> = obs.lines().find_map(|l| l.strip_prefix("missing: ")).map_or(vec![], |l| l.split(' ').collect());
    let about = match (focus, printed.as_slice()) {
        (Some(c), [n, rest @ ..]) => format!(" `{}` is {} with {n} missing value{}{}.", c.name, c.dtype, if *n == "1" { "" } else { "s" },
            match rest { ["range:", a, b] => format!(", ranging from {a} to {b}"), _ => String::new() }),
        _ => String::new(),
    };
    out.response += &format!(
        "<Understand>\n{} has {} rows and {} columns.{about} Looking closer at the table, the columns needed for this task are present.\n</Understand>\n",
        t.label(), t.rows, t.columns.len()
    );
    let solution = format!("import pandas as pd\n{load}\n{}", task.solution);
    if with_error {
        // A plausible slip: the column name in lower case (or pluralised when it already is).
        let lower = task.focus.to_lowercase() != task.focus;
        let wrong = if lower { task.focus.to_lowercase() } else { format!("{}s", task.focus) };
        let why = if lower { "names are case-sensitive" } else { "there is no trailing s" };
        let broken = solution.replace(&py(&task.focus), &py(&wrong));
        if broken != solution {
            let obs = run(&broken, &mut out);
            if obs.starts_with("[Error]") {
                out.recovered_error = true;
                out.response += &format!(
                    "<Understand>\nThe code failed: reviewing the previous step, I wrote `{wrong}`, but the column is named `{}` exactly ({why}). I will rerun with the right name.\n</Understand>\n",
                    task.focus
                );
            }
        }
    }
    let obs = run(&solution, &mut out);
    let answers = parse_answers(&obs);
    // The result is restated right before the answer: the answer copies what was printed.
    let lines = answers.iter().map(|(n, v)| format!("@{n}[{v}]")).collect::<Vec<_>>().join("\n");
    out.response += &format!("<Understand>\nLet me check the boundaries of this result: {}. The printed result stands:\n{lines}\n</Understand>\n", task.review);
    out.response += &format!("<Answer>\n{lines}\n</Answer>");
    out
}
