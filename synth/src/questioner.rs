//! The Questioner: task families over a profiled table, each with phrasing variants, a
//! graded difficulty, DABench-style `@name[value]` answers, a checklist, a reference
//! program (run in the sandbox for the ground truth) and the expert's own solution code,
//! written differently from the reference so the two check each other.
use crate::profile::{Column, Table};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub family: &'static str,
    pub difficulty: &'static str,
    pub table: Table,
    /// Join tasks: the second table, loaded as `df2`.
    pub other: Option<Table>,
    /// The instruction the model sees (question + answer format).
    pub instruction: String,
    pub answer_names: Vec<String>,
    /// Prints the ground truth as `@name[value]` lines.
    pub reference: String,
    /// The expert's computation (after loading `df`), printing `@name[value]` lines.
    pub solution: String,
    /// A column the expert may first get wrong (error-recovery trajectories).
    pub focus: String,
    /// What the expert checks once it has the result (reflective reasoning).
    pub review: String,
    pub checklist: Vec<String>,
    /// Data-preparation tasks: a program run in the workspace after the trajectory that
    /// prints `OK` when the files it had to write satisfy the checklist.
    pub file_check: Option<String>,
}

pub const FAMILIES: [&str; 12] = [
    "mean", "count_above", "missing", "group_top", "correlation", "max_row", "outliers", "filter_mean", "clean", "features",
    "report", "research",
];

/// The RL task kind of a family: open-ended research reports are judged as reports.
pub fn kind_of(family: &str) -> &'static str {
    match family {
        "research" => "openresearch",
        "clean" | "features" | "report" => "datatask",
        _ => "qa",
    }
}

/// A Python string literal (JSON strings are valid Python literals).
pub fn py(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

impl Task {
    /// The data files the task needs in its workspace.
    pub fn files(&self) -> Vec<String> {
        let mut f = vec![self.table.file.clone()];
        f.extend(self.other.as_ref().map(|o| o.file.clone()).filter(|o| *o != self.table.file));
        f
    }

    /// Python that loads every table of the task (`df`, and `df2` for joins).
    pub fn load_code(&self) -> String {
        match &self.other {
            Some(o) => format!("{}\n{}", load_code(&self.table), load_as(o, "df2")),
            None => load_code(&self.table),
        }
    }
}

/// Python that loads the table into `df`.
pub fn load_code(t: &Table) -> String {
    load_as(t, "df")
}

/// Python that loads the table into `var`.
pub fn load_as(t: &Table, var: &str) -> String {
    let f = py(&t.file);
    let ext = t.file.rsplit('.').next().unwrap_or("").to_lowercase();
    match (ext.as_str(), &t.table) {
        ("sqlite" | "db", Some(name)) => format!(
            "import sqlite3\ncon = sqlite3.connect({f})\n{var} = pd.read_sql({}, con)",
            py(&format!("select * from \"{name}\""))
        ),
        ("tsv", _) => format!("{var} = pd.read_csv({f}, sep='\\t')"),
        ("xlsx", _) => format!("{var} = pd.read_excel({f})"),
        ("parquet", _) => format!("{var} = pd.read_parquet({f})"),
        ("json", _) => format!("{var} = pd.read_json({f})"),
        _ => match &t.sep {
            Some(sep) => format!("{var} = pd.read_csv({f}, sep={})", py(sep)),
            None => format!("{var} = pd.read_csv({f})"),
        },
    }
}

/// A column name as part of an answer or function name: `Solar.R` → `solar_r`.
pub(crate) fn slug(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    s.trim_matches('_').to_string()
}

const HELPER: &str = "import pandas as pd\nimport numpy as np\ndef answer(name, value):\n    if isinstance(value, (float, np.floating)):\n        value = '%.2f' % value\n    elif isinstance(value, (np.integer,)):\n        value = int(value)\n    print('@%s[%s]' % (name, value))\n";

fn fmt_num(x: f64, integer: bool) -> String {
    if integer { format!("{}", x.round() as i64) } else { format!("{:.1}", x) }
}

fn pick<'a>(rng: &mut StdRng, cols: &[&'a Column]) -> Option<&'a Column> {
    cols.choose(rng).copied()
}

fn vary(rng: &mut StdRng, options: &[String]) -> String {
    options.choose(rng).unwrap().clone()
}

/// Numeric columns that are measurements, not row ids.
fn measures(t: &Table) -> Vec<&Column> {
    t.numeric().filter(|c| !t.keys.contains(&c.name) && c.unique > 2).collect()
}

/// One task of `family` on `t`, or None when the table has nothing it can ask about.
pub fn pose(family: &'static str, t: &Table, rng: &mut StdRng, id: String) -> Option<Task> {
    let label = t.label();
    let nums = measures(t);
    let cats: Vec<&Column> = t.categorical().filter(|c| c.unique <= 12).collect();
    let load = load_code(t);
    let two = "a number rounded to two decimal places";
    let task = |difficulty, instruction: String, names: Vec<String>, reference: String, solution: String, focus: &str, review: String, formats: Vec<String>| {
        let fmt = names.iter().zip(&formats).map(|(n, f)| format!("@{n}[value] where \"value\" is {f}")).collect::<Vec<_>>().join(", ");
        Some(Task {
            id: id.clone(),
            family,
            difficulty,
            table: t.clone(),
            other: None,
            instruction: format!("{instruction}\nAnswer format: {fmt}."),
            checklist: vec![format!("answers {}", names.iter().map(|n| format!("@{n}")).collect::<Vec<_>>().join(", ")),
                            "each code block in a ```python fence".into(), "reads the data from the file".into()],
            answer_names: names,
            reference: format!("{HELPER}{load}\n{reference}"),
            solution,
            focus: focus.to_string(),
            review,
            file_check: None,
        })
    };
    match family {
        "mean" => {
            let c = pick(rng, &nums)?;
            let (q, n) = (py(&c.name), format!("mean_{}", slug(&c.name)));
            let instruction = vary(rng, &[
                format!("What is the average value of the `{}` column in {label}?", c.name),
                format!("Compute the mean of `{}` in {label}, ignoring missing values.", c.name),
                format!("Find the arithmetic mean of the `{}` values in {label}.", c.name),
            ]);
            task("easy", instruction, vec![n.clone()],
                 format!("v = df[{q}].dropna().astype(float)\nanswer({}, float(v.sum() / len(v)))", py(&n)),
                 format!("print('@{n}[%.2f]' % df[{q}].mean())"), &c.name,
                 format!("missing values were left out, and {:.2} <= mean <= {:.2} holds for the column's range, so the value is plausible", c.min?, c.max?),
                 vec![two.into()])
        }
        "count_above" => {
            let c = pick(rng, &nums)?;
            let thr = fmt_num(c.median?, c.integer.unwrap_or(false));
            let (q, n) = (py(&c.name), format!("count_{}_above", slug(&c.name)));
            let instruction = vary(rng, &[
                format!("How many rows of {label} have `{}` greater than {thr}?", c.name),
                format!("Count the records in {label} whose `{}` exceeds {thr}.", c.name),
            ]);
            task("easy", instruction, vec![n.clone()],
                 format!("answer({}, int(sum(1 for x in df[{q}] if pd.notna(x) and x > {thr})))", py(&n)),
                 format!("print('@{n}[%d]' % (df[{q}] > {thr}).sum())"), &c.name,
                 format!("'greater than' is strict, so rows equal to {thr} are not counted, and missing values never compare as greater"),
                 vec!["an integer".into()])
        }
        "missing" => {
            let with: Vec<&Column> = t.columns.iter().filter(|c| c.missing > 0).collect();
            let c = pick(rng, &with).or_else(|| pick(rng, &t.columns.iter().collect::<Vec<_>>()))?;
            let (q, n) = (py(&c.name), format!("missing_{}", slug(&c.name)));
            task("easy", format!("How many values are missing in the `{}` column of {label}?", c.name), vec![n.clone()],
                 format!("answer({}, int(len(df) - df[{q}].count()))", py(&n)),
                 format!("print('@{n}[%d]' % df[{q}].isna().sum())"), &c.name,
                 format!("the table has {} rows, and the count cannot exceed that", t.rows),
                 vec!["an integer".into()])
        }
        "group_top" => {
            let (g, v) = (pick(rng, &cats)?, pick(rng, &nums)?);
            let (qg, qv) = (py(&g.name), py(&v.name));
            let (n1, n2) = (format!("top_{}", slug(&g.name)), format!("mean_{}", slug(&v.name)));
            let instruction = vary(rng, &[
                format!("Group {label} by `{}`. Which group has the highest average `{}`, and what is that average?", g.name, v.name),
                format!("Which value of `{}` in {label} has the largest mean `{}`? Also give that mean.", g.name, v.name),
            ]);
            task("medium", instruction, vec![n1.clone(), n2.clone()],
                 format!("s = {{}}\nfor k, x in zip(df[{qg}], df[{qv}]):\n    if pd.notna(k) and pd.notna(x):\n        s.setdefault(k, []).append(float(x))\nbest = max(s, key=lambda k: (sum(s[k]) / len(s[k])))\nanswer({}, best)\nanswer({}, sum(s[best]) / len(s[best]))", py(&n1), py(&n2)),
                 format!("m = df.groupby({qg})[{qv}].mean()\nprint(m.sort_values(ascending=False))\nprint('@{n1}[%s]' % m.idxmax())\nprint('@{n2}[%.2f]' % m.max())"), &v.name,
                 "the sorted means show the winner on top, and each group mean lies inside the column's range".to_string(),
                 vec!["the group's value".into(), two.into()])
        }
        "correlation" => {
            if nums.len() < 2 {
                return None;
            }
            let mut pair: Vec<&Column> = nums.clone();
            let a = pair.remove(rng.random_range(0..pair.len()));
            let b = pair[rng.random_range(0..pair.len())];
            let (qa, qb, n) = (py(&a.name), py(&b.name), format!("corr_{}_{}", slug(&a.name), slug(&b.name)));
            task("medium", format!("What is the Pearson correlation coefficient between `{}` and `{}` in {label}, using rows where both are present?", a.name, b.name), vec![n.clone()],
                 format!("d = df[[{qa}, {qb}]].dropna().astype(float)\nx, y = d[{qa}].to_numpy(), d[{qb}].to_numpy()\nanswer({}, float(np.corrcoef(x, y)[0, 1]))", py(&n)),
                 format!("print('@{n}[%.2f]' % df[{qa}].corr(df[{qb}]))"), &a.name,
                 "a correlation must lie between -1 and 1, and pandas drops rows with a missing value in either column".to_string(),
                 vec![format!("{two}, between -1 and 1")])
        }
        "max_row" => {
            let v = pick(rng, &nums)?;
            let id_col = t.keys.first().cloned().or_else(|| t.columns.iter().find(|c| c.kind != "numeric").map(|c| c.name.clone()))?;
            if id_col == v.name {
                return None;
            }
            let (qv, qi, n) = (py(&v.name), py(&id_col), format!("max_{}_{}", slug(&v.name), slug(&id_col)));
            task("medium", format!("Which `{id_col}` in {label} has the largest `{}`? If several tie, give the first in file order.", v.name), vec![n.clone()],
                 format!("best = None\nfor k, x in zip(df[{qi}], df[{qv}]):\n    if pd.notna(x) and (best is None or x > best[1]):\n        best = (k, x)\nanswer({}, best[0])", py(&n)),
                 format!("top = df.sort_values({qv}, ascending=False, kind='stable').iloc[0]\nprint(top)\nprint('@{n}[%s]' % top[{qi}])"), &v.name,
                 "a stable sort keeps the first of any tied rows on top, as asked".to_string(),
                 vec![format!("the `{id_col}` of that row")])
        }
        "outliers" => {
            let c = pick(rng, &nums)?;
            let q = py(&c.name);
            let (n1, n2, n3) = ("n_outliers".to_string(), "lower_fence".to_string(), "upper_fence".to_string());
            task("hard", format!("Using the 1.5 x IQR rule on `{}` in {label} (quartiles by linear interpolation), how many outliers are there, and what are the lower and upper fences?", c.name),
                 vec![n1.clone(), n2.clone(), n3.clone()],
                 format!("x = np.sort(df[{q}].dropna().astype(float).to_numpy())\nq1, q3 = np.percentile(x, 25), np.percentile(x, 75)\nlo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)\nanswer('n_outliers', int(((x < lo) | (x > hi)).sum()))\nanswer('lower_fence', float(lo))\nanswer('upper_fence', float(hi))"),
                 format!("s = df[{q}].dropna()\nq1, q3 = s.quantile(0.25), s.quantile(0.75)\niqr = q3 - q1\nlo, hi = q1 - 1.5 * iqr, q3 + 1.5 * iqr\nprint('Q1 =', q1, 'Q3 =', q3)\nprint('@{n1}[%d]' % ((s < lo) | (s > hi)).sum())\nprint('@{n2}[%.2f]' % lo)\nprint('@{n3}[%.2f]' % hi)"),
                 &c.name, "the fences bracket the quartiles, and points exactly on a fence are not outliers".to_string(),
                 vec!["an integer".into(), two.into(), two.into()])
        }
        "filter_mean" => {
            let (g, v) = (pick(rng, &cats)?, pick(rng, &nums)?);
            let val = g.top.as_ref()?.first()?.0.clone();
            let (qg, qv) = (py(&g.name), py(&v.name));
            let lit = if g.dtype.starts_with("int") || g.dtype.starts_with("float") { val.clone() } else { py(&val) };
            let (n1, n2) = ("count_rows".to_string(), format!("mean_{}", slug(&v.name)));
            task("hard", format!("Among the rows of {label} where `{}` is {val}, how many are there and what is their mean `{}`?", g.name, v.name),
                 vec![n1.clone(), n2.clone()],
                 format!("rows = [x for k, x in zip(df[{qg}], df[{qv}]) if k == {lit}]\nanswer('count_rows', len(rows))\nvals = [float(x) for x in rows if pd.notna(x)]\nanswer({}, sum(vals) / len(vals))", py(&n2)),
                 format!("sub = df[df[{qg}] == {lit}]\nprint(sub.shape)\nprint('@{n1}[%d]' % len(sub))\nprint('@{n2}[%.2f]' % sub[{qv}].mean())"),
                 &v.name, "the subset is smaller than the table, and its mean skips missing values".to_string(),
                 vec!["an integer".into(), two.into()])
        }
        "clean" => {
            // Data preparation with constraints on the output file.
            let with: Vec<&Column> = t.columns.iter().filter(|c| c.missing > 0 && c.missing < t.rows).collect();
            let c = pick(rng, &with)?;
            let stem = t.file.rsplit_once('.').map_or(t.file.as_str(), |(a, _)| a);
            let out = format!("{}_clean.csv", slug(stem));
            let q = py(&c.name);
            let mut task = task("medium",
                 format!("Clean {label}: drop the rows where `{}` is missing, fill the remaining missing values of every numeric column with that column's median (computed after the drop), and save the result to `{out}` without the index. How many rows does the cleaned table have?", c.name),
                 vec!["rows_kept".into()],
                 format!("answer('rows_kept', int(df[{q}].notna().sum()))"),
                 format!("df = df.dropna(subset=[{q}])\nnum = df.select_dtypes('number').columns\ndf[num] = df[num].fillna(df[num].median())\nprint(df.isna().sum())\ndf.to_csv({}, index=False)\nprint('@rows_kept[%d]' % len(df))", py(&out)),
                 &c.name, format!("no value of `{}` is missing any more, and the file `{out}` keeps every column", c.name),
                 vec!["an integer".into()])?;
            task.checklist.push(format!("writes {out} with the same columns, no missing `{}`, no missing numeric values", c.name));
            task.file_check = Some(format!(
                "{HELPER}{load}\nout = pd.read_csv({})\nkept = df.dropna(subset=[{q}])\nproblems = []\nif list(out.columns) != [str(c) for c in df.columns]:\n    problems.append('columns differ')\nif len(out) != len(kept):\n    problems.append('%d rows, expected %d' % (len(out), len(kept)))\nif out.select_dtypes('number').isna().any().any() or out[{q}].isna().any():\n    problems.append('missing values left')\nprint('OK' if not problems else '; '.join(problems))",
                py(&out)));
            Some(task)
        }
        "features" => {
            // Feature engineering with the new column checked in the written file.
            let c = pick(rng, &nums)?;
            let stem = t.file.rsplit_once('.').map_or(t.file.as_str(), |(a, _)| a);
            let out = format!("{}_features.csv", slug(stem));
            let (q, z) = (py(&c.name), format!("{}_z", c.name));
            let qz = py(&z);
            let mut task = task("medium",
                 format!("Add to {label} a column `{z}` holding the z-score of `{}` ((value - mean) / sample standard deviation; missing values stay missing), save the table with the new column to `{out}` without the index, and give the largest z-score.", c.name),
                 vec!["max_z".into()],
                 format!("x = df[{q}].astype(float).to_numpy()\nok = x[~np.isnan(x)]\nanswer('max_z', float(((ok - ok.mean()) / ok.std(ddof=1)).max()))"),
                 format!("df[{qz}] = (df[{q}] - df[{q}].mean()) / df[{q}].std()\nprint(df[{qz}].describe())\ndf.to_csv({}, index=False)\nprint('@max_z[%.2f]' % df[{qz}].max())", py(&out)),
                 &c.name, "z-scores have mean 0 and standard deviation 1 by construction, which the description confirms".to_string(),
                 vec![two.into()])?;
            task.checklist.push(format!("writes {out}: every original column plus `{z}`"));
            task.file_check = Some(format!(
                "{HELPER}{load}\nout = pd.read_csv({})\nx = df[{q}].astype(float)\nwant = (x - x.mean()) / x.std()\nproblems = []\nif list(out.columns) != [str(c) for c in df.columns] + [{qz}]:\n    problems.append('columns')\nelif not np.allclose(out[{qz}].to_numpy(dtype=float), want.to_numpy(), equal_nan=True, atol=1e-6):\n    problems.append('z values')\nprint('OK' if not problems else 'wrong: ' + ', '.join(problems))",
                py(&out)));
            Some(task)
        }
        "report" => {
            // Analysis and insight: a written report whose numbers are checked.
            let (g, v) = (pick(rng, &cats)?, pick(rng, &nums)?);
            let (qg, qv) = (py(&g.name), py(&v.name));
            let (n1, n2) = (format!("top_{}", slug(&g.name)), format!("mean_{}", slug(&v.name)));
            let mut task = task("hard",
                 format!("Analyze `{}` across the `{}` groups of {label} and write a short report to `report.md` with the sections `## Overview`, `## Key statistics` (the overall mean and standard deviation of `{}`, two decimals) and `## Findings` (which group has the highest mean `{}` and what it is). Also answer with that group and its mean.", v.name, g.name, v.name, v.name),
                 vec![n1.clone(), n2.clone()],
                 format!("m = df.groupby({qg})[{qv}].mean()\nanswer({}, m.idxmax())\nanswer({}, float(m.max()))", py(&n1), py(&n2)),
                 format!("s = df[{qv}]\nm = df.groupby({qg})[{qv}].mean().sort_values(ascending=False)\nprint(m)\nlines = ['# {v} by {g}', '', '## Overview', '{label}: %d rows, %d groups of `{g}`.' % (len(df), df[{qg}].nunique()), '',\n         '## Key statistics', '- mean of `{v}`: %.2f' % s.mean(), '- standard deviation of `{v}`: %.2f' % s.std(), '',\n         '## Findings', '- `%s` has the highest mean `{v}`: %.2f.' % (m.index[0], m.iloc[0])]\nopen('report.md', 'w').write('\\n'.join(lines) + '\\n')\nprint('@{n1}[%s]' % m.index[0])\nprint('@{n2}[%.2f]' % m.iloc[0])", v = v.name, g = g.name),
                 &v.name, "the report states the overall figures next to the best group's, so a reader can see how far above the mean it lies".to_string(),
                 vec!["the group's value".into(), two.into()])?;
            task.checklist.push("writes report.md with Overview, Key statistics and Findings, quoting the mean and standard deviation".into());
            task.file_check = Some(format!(
                "{HELPER}{load}\ntext = open('report.md').read()\nneed = ['## Overview', '## Key statistics', '## Findings', '%.2f' % df[{qv}].mean(), '%.2f' % df[{qv}].std()]\nmissing = [n for n in need if n not in text]\nprint('OK' if not missing else 'missing: ' + ', '.join(missing))"));
            Some(task)
        }
        "research" => {
            // An open-ended research report with a figure: its form and numbers are checked
            // here; its quality is for the RL stage's report judge.
            if nums.len() < 2 {
                return None;
            }
            let g = pick(rng, &cats)?;
            let mut pair = nums.clone();
            let v = pair.remove(rng.random_range(0..pair.len()));
            let w = pair[rng.random_range(0..pair.len())];
            let (qg, qv, qw) = (py(&g.name), py(&v.name), py(&w.name));
            let n = format!("corr_{}_{}", slug(&v.name), slug(&w.name));
            let mut task = task("hard",
                 format!("Research what goes with `{v}` in {label}. Write a report to `report.md` with the sections `## Data`, `## Analysis` and `## Conclusions`: describe the table, compare `{v}` across the `{g}` groups, relate `{v}` to `{w}` (Pearson correlation, two decimals), save one figure as `figure.png` and refer to it in the report. Also answer with that correlation.", v = v.name, g = g.name, w = w.name),
                 vec![n.clone()],
                 format!("d = df[[{qv}, {qw}]].dropna().astype(float)\nanswer({}, float(np.corrcoef(d[{qv}], d[{qw}])[0, 1]))", py(&n)),
                 format!("import matplotlib.pyplot as plt\nr = df[{qv}].corr(df[{qw}])\nm = df.groupby({qg})[{qv}].agg(['mean', 'count']).round(2)\nprint(m)\nfig, ax = plt.subplots(figsize=(5, 4))\nax.scatter(df[{qw}], df[{qv}], s=12)\nax.set_xlabel({qw})\nax.set_ylabel({qv})\nax.set_title('%s vs %s (r = %.2f)' % ({qv}, {qw}, r))\nfig.savefig('figure.png', dpi=80)\nbest = m['mean'].idxmax()\nlines = ['# What goes with {v} in {label}', '', '## Data', '%d rows; `{v}` ranges from %.2f to %.2f.' % (len(df), df[{qv}].min(), df[{qv}].max()), '',\n         '## Analysis', 'Mean `{v}` by `{g}`:', '', m.to_string(), '', 'The Pearson correlation of `{v}` with `{w}` is %.2f (figure.png).' % r, '', '![{v} against {w}](figure.png)', '',\n         '## Conclusions', '- `%s` has the highest mean `{v}`.' % best, '- The link with `{w}` is %s (r = %.2f).' % ('strong' if abs(r) >= 0.7 else 'moderate' if abs(r) >= 0.4 else 'weak', r)]\nopen('report.md', 'w').write('\\n'.join(lines) + '\\n')\nprint('@{n}[%.2f]' % r)", v = v.name, g = g.name, w = w.name),
                 &v.name, "a correlation lies in [-1, 1], and the figure shows the same relation the number states".to_string(),
                 vec![format!("{two}, between -1 and 1")])?;
            task.checklist.push("writes report.md (Data, Analysis, Conclusions) referring to figure.png, and figure.png".into());
            task.file_check = Some(format!(
                "{HELPER}{load}\nimport os\ntext = open('report.md').read() if os.path.exists('report.md') else ''\npng = open('figure.png', 'rb').read(8) if os.path.exists('figure.png') else b''\nd = df[[{qv}, {qw}]].dropna().astype(float)\nneed = ['## Data', '## Analysis', '## Conclusions', 'figure.png', '%.2f' % np.corrcoef(d[{qv}], d[{qw}])[0, 1]]\nmissing = [x for x in need if x not in text] + ([] if png == b'\\x89PNG\\r\\n\\x1a\\n' else ['a PNG figure'])\nprint('OK' if not missing else 'missing: ' + ', '.join(missing))"));
            Some(task)
        }
        _ => None,
    }
}

/// Pairs of tables in different files that share a column which is a key of both and
/// names things (not a numeric row number, which every R export has and which would join
/// unrelated tables).
pub fn join_pairs(tables: &[Table]) -> Vec<(usize, usize, String)> {
    let named = |t: &Table, k: &str| t.columns.iter().any(|c| c.name == k && c.kind != "numeric");
    let mut out = vec![];
    for (i, a) in tables.iter().enumerate() {
        for (j, b) in tables.iter().enumerate() {
            if a.file == b.file {
                continue;
            }
            for k in a.keys.iter().filter(|k| b.keys.contains(k) && named(a, k) && named(b, k)) {
                out.push((i, j, k.clone()));
            }
        }
    }
    out
}

/// A join task: rows of `a` above the median of one of its measures, matched on `key` with
/// `b`, and one of `b`'s measures averaged over them.
pub fn pose_join(a: &Table, b: &Table, key: &str, rng: &mut StdRng, id: String) -> Option<Task> {
    let only = |t: &Table, other: &Table| -> Vec<Column> {
        measures(t).into_iter().filter(|c| !other.columns.iter().any(|o| o.name == c.name)).cloned().collect()
    };
    let (va, vb) = (only(a, b), only(b, a));
    let va = va.choose(rng)?.clone();
    let vb = vb.choose(rng)?.clone();
    let thr = fmt_num(va.median?, va.integer.unwrap_or(false));
    let (qk, qa, qb) = (py(key), py(&va.name), py(&vb.name));
    let n2 = format!("mean_{}", slug(&vb.name));
    let load = format!("{}\n{}", load_code(a), load_as(b, "df2"));
    let instruction = format!(
        "{} and {} describe the same `{key}`s. Join them on `{key}` and, over the rows whose `{}` is greater than {thr}, give how many rows there are and the mean `{}`.\nAnswer format: @n_rows[value] where \"value\" is an integer, @{n2}[value] where \"value\" is a number rounded to two decimal places.",
        a.label(), b.label(), va.name, vb.name);
    Some(Task {
        id,
        family: "join",
        difficulty: "hard",
        table: a.clone(),
        other: Some(b.clone()),
        instruction,
        answer_names: vec!["n_rows".into(), n2.clone()],
        reference: format!("{HELPER}{load}\nright = dict(zip(df2[{qk}], df2[{qb}]))\nsel = [right[k] for k, x in zip(df[{qk}], df[{qa}]) if pd.notna(x) and x > {thr} and k in right]\nanswer('n_rows', len(sel))\nvals = [float(v) for v in sel if pd.notna(v)]\nanswer({}, sum(vals) / len(vals))", py(&n2)),
        solution: format!("j = df.merge(df2, on={qk})\nprint(j.shape)\nsub = j[j[{qa}] > {thr}]\nprint('@n_rows[%d]' % len(sub))\nprint('@{n2}[%.2f]' % sub[{qb}].mean())"),
        focus: va.name.clone(),
        review: format!("an inner join keeps only `{key}`s present in both files, and the count cannot exceed either table's rows"),
        checklist: vec!["answers @n_rows, @".to_string() + &n2, "joins the two files on the shared key".into()],
        file_check: None,
    })
}
