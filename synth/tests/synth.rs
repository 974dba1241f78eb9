//! Synthesis on tables it has never seen (the DABench dev tables), checked independently:
//! each accepted trajectory's code is re-run from its own text and must reproduce its
//! observations; a sample of ground truths is recomputed with Python's csv and statistics
//! modules; the DABench grader reproduces the benchmark's judgement on its dev labels.
use datasets::{read_all, RlTask, Trajectory};
use sandbox::{Mode, Sandbox, SandboxConfig};
use std::path::{Path, PathBuf};
use synth::grade::{correct, grade, parse_answers};
use synth::{synthesize, SynthConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn sandbox() -> Sandbox {
    let python = root().join(".venv-sandbox/bin/python");
    assert!(python.exists(), "run scripts/setup-sandbox.sh");
    Sandbox::new(SandboxConfig { python, ..SandboxConfig::default() }).unwrap()
}

#[test]
fn dabench_grader_reproduces_the_benchmark_on_its_dev_labels() {
    let labels = std::fs::read_to_string(root().join("../shared/data/dabench-dev/labels.jsonl")).unwrap();
    let mut n = 0;
    for line in labels.lines() {
        let l: serde_json::Value = serde_json::from_str(line).unwrap();
        let truth: Vec<(String, String)> = l["common_answers"].as_array().unwrap().iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string())).collect();
        let right: String = truth.iter().map(|(k, v)| format!("@{k}[{v}] ")).collect();
        assert!(correct(&format!("The answers: {right}"), &truth), "{right}");
        assert_eq!(parse_answers(&right).len(), truth.len());
        // Perturb each sub-answer in turn: a number by one unit in its last place, a word by
        // a letter; the question is then wrong, and only that sub-answer.
        for i in 0..truth.len() {
            let mut bad = truth.clone();
            let v = &bad[i].1;
            bad[i].1 = match v.parse::<f64>() {
                Ok(x) => {
                    let decimals = v.split('.').nth(1).map_or(0, str::len);
                    format!("{:.*}", decimals, x + 10f64.powi(-(decimals as i32)))
                }
                Err(_) => format!("{v}x"),
            };
            let resp: String = bad.iter().map(|(k, v)| format!("@{k}[{v}] ")).collect();
            assert!(!correct(&resp, &truth), "{resp} accepted for {truth:?}");
            let per = grade(&resp, &truth);
            assert_eq!(per.iter().filter(|&&ok| !ok).count(), 1);
        }
        // A missing sub-answer fails the question.
        if truth.len() > 1 {
            assert!(!correct(&format!("@{}[{}]", truth[0].0, truth[0].1), &truth));
        }
        n += 1;
    }
    assert_eq!(n, 105);
    // Numbers compare as numbers; formatting differences do not matter.
    assert!(correct("@x[3.60]", &[("x".into(), "3.6".into())]));
    assert!(!correct("@x[3.61]", &[("x".into(), "3.6".into())]));
}

fn unseen_tables() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in ["abalone.csv", "auto-mpg.csv", "election2016.csv"] {
        std::fs::copy(root().join("../shared/data/dabench-dev/tables").join(f), d.path().join(f)).unwrap();
    }
    d
}

/// (code, observation) pairs read back out of a trajectory's text.
fn cells(response: &str) -> Vec<(String, String)> {
    response
        .split("<Code>\n```python\n")
        .skip(1)
        .map(|part| {
            let (code, rest) = part.split_once("\n```\n</Code>\n<Execute>\n").unwrap();
            let obs = &rest[..rest.find("\n</Execute>").unwrap()];
            (code.to_string(), obs.to_string())
        })
        .collect()
}

#[test]
fn accepted_trajectories_reproduce_and_ground_truth_agrees_with_a_second_computation() {
    let sb = sandbox();
    let tables = unseen_tables();
    let out = tempfile::tempdir().unwrap();
    let cfg = SynthConfig { tables: tables.path().into(), out: out.path().join("s"), tasks: 24, seed: 7, error_rate: 0.3, teacher: None,
                            tokenizer: Some(root().join("assets/qwen3-tokenizer")), paraphrase: false };
    let report = synthesize(&cfg, &sb, &|_, _| {}).unwrap();
    assert_eq!(report.posed, 24);
    let [min, median, max, mean] = report.trajectory_tokens.expect("token lengths with a tokenizer");
    assert!(min > 50.0 && min <= median && median <= max && min <= mean && mean <= max, "{min} {median} {max} {mean}");
    assert!(report.accepted >= 18, "{report:?}");
    let trajs: Vec<Trajectory> = read_all(&out.path().join("s/trajectories")).unwrap();
    assert_eq!(trajs.len(), report.accepted);
    let tasks: Vec<RlTask> = read_all(&out.path().join("s/rl_tasks")).unwrap();
    for t in &trajs {
        let task = tasks.iter().find(|x| x.id == t.task_id).unwrap();
        let ws = sb.workspace(Some(&out.path().join("s/rl_tasks").join(&task.workspace))).unwrap();
        let cs = cells(&t.response);
        assert!(cs.len() >= 2, "{}", t.response);
        for (code, obs) in cs {
            assert_eq!(sb.run(&ws, &code, Mode::Stateless).observation, obs, "{}", t.id);
        }
        let truth: Vec<(String, String)> = serde_json::from_str(task.ground_truth.as_deref().unwrap()).unwrap();
        let answer = t.response.rsplit("<Answer>").next().unwrap();
        assert!(correct(answer, &truth), "{}: {answer} vs {truth:?}", t.id);
    }
    // A second computation of simple families, with the csv module instead of pandas.
    let mut checked = 0;
    for task in &tasks {
        let meta: serde_json::Value = serde_json::from_str(&task.metadata).unwrap();
        let family = meta["family"].as_str().unwrap();
        if !["mean", "missing", "count_above"].contains(&family) {
            continue;
        }
        let truth: Vec<(String, String)> = serde_json::from_str(task.ground_truth.as_deref().unwrap()).unwrap();
        let col = task.prompt.split('`').nth(1).unwrap();
        let thr = task.prompt.split(" than ").nth(1).or_else(|| task.prompt.split(" exceeds ").nth(1)).map(|s| {
            let num: String = s.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-').collect();
            num.trim_end_matches('.').to_string()
        });
        let code = format!(r#"import csv, statistics
rows = list(csv.DictReader(open({file:?}, newline='')))
vals = [r[{col:?}] for r in rows]
NA = {{'', '#N/A', '#N/A N/A', '#NA', '-1.#IND', '-1.#QNAN', '-NaN', '-nan', '1.#IND', '1.#QNAN', '<NA>', 'N/A',
      'NA', 'NULL', 'NaN', 'None', 'n/a', 'nan', 'null'}}  # pandas' defaults
fam = {family:?}
if fam == 'missing':
    print(sum(1 for v in vals if v in NA))
else:
    num = [float(v) for v in vals if v not in NA]
    if fam == 'mean':
        print('%.2f' % statistics.fmean(num))
    else:
        print(sum(1 for x in num if x > float({thr:?})))
"#, file = task.files[0], thr = thr.clone().unwrap_or_default());
        let ws = sb.workspace(Some(&out.path().join("s/rl_tasks").join(&task.workspace))).unwrap();
        let second = sb.run(&ws, &code, Mode::Stateless);
        assert!(second.is_ok(), "{}", second.observation);
        let want = &truth[0].1;
        assert!(synth::grade::values_match(second.observation.trim(), want), "{}: {} vs {want} ({})", task.id, second.observation, task.prompt);
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} tasks recomputed");
    // Code-grounding samples: the cell loads the prompt's file and uses its column, re-runs
    // to the same observation, and the answer is what it printed.
    let single: Vec<datasets::SftSample> = read_all(&out.path().join("s/sft_single")).unwrap();
    let grounding: Vec<_> = single.iter().filter(|s| s.ability == "code-grounding").collect();
    assert!(grounding.len() >= 8, "{} grounding samples", grounding.len());
    let all = sb.workspace(Some(tables.path())).unwrap();
    for g in &grounding {
        let (prompt, response) = (&g.messages[0].content, &g.messages[1].content);
        let file = prompt.split("\"name\": \"").nth(1).unwrap().split('"').next().unwrap();
        let col = prompt.split('`').nth(1).unwrap();
        let cs = cells(response);
        assert_eq!(cs.len(), 1, "{response}");
        let (code, obs) = &cs[0];
        assert!(code.contains(&format!("{file:?}")) && code.contains(&format!("df[{col:?}]")), "{code}");
        assert_eq!(&sb.run(&all, code, Mode::Stateless).observation, obs);
        assert_eq!(response.rsplit("<Answer>\n").next().unwrap().trim_end_matches("\n</Answer>"), obs.trim());
    }
    let report_file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("s/report.json")).unwrap()).unwrap();
    assert_eq!(report_file["accepted"], report.accepted);
    // Deterministic by seed: the same run again gives the same trajectories.
    let again = synthesize(&SynthConfig { out: out.path().join("s2"), ..cfg.clone() }, &sb, &|_, _| {}).unwrap();
    let trajs2: Vec<Trajectory> = read_all(&out.path().join("s2/trajectories")).unwrap();
    assert_eq!(again.accepted, report.accepted);
    assert_eq!(trajs2.iter().map(|t| &t.response).collect::<Vec<_>>(), trajs.iter().map(|t| &t.response).collect::<Vec<_>>());
}

#[test]
fn bad_tables_are_skipped_with_a_reason() {
    let sb = sandbox();
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("good.csv"), "a,b\n1,x\n2,y\n3,x\n4,y\n").unwrap();
    std::fs::write(p.join("empty.csv"), "a,b\n").unwrap();
    std::fs::write(p.join("onecol.csv"), "a\n1\n2\n").unwrap();
    std::fs::write(p.join("latin1.csv"), b"name,city\nJos\xe9,M\xe1laga\nAna,Le\xf3n\n").unwrap();
    std::fs::write(p.join("garbage.xlsx"), b"\x00\x01not a spreadsheet").unwrap();
    let status = std::process::Command::new(root().join(".venv-sandbox/bin/python"))
        .args(["-c", &format!("import sqlite3; sqlite3.connect({:?}).execute('pragma user_version = 1')", p.join("none.sqlite"))])
        .status().unwrap();
    assert!(status.success());
    let out = tempfile::tempdir().unwrap();
    let cfg = SynthConfig { tables: p.into(), out: out.path().join("o"), tasks: 4, seed: 1, error_rate: 0.0, teacher: None, tokenizer: None, paraphrase: false };
    let report = synthesize(&cfg, &sb, &|_, _| {}).unwrap();
    let reason = |f: &str| report.skipped.iter().find(|s| s.file == f).map(|s| s.reason.clone()).unwrap_or_else(|| panic!("{f} not skipped: {:?}", report.skipped));
    assert_eq!(reason("empty.csv"), "empty table");
    assert_eq!(reason("onecol.csv"), "only one column");
    assert!(reason("latin1.csv").contains("not UTF-8"), "{}", reason("latin1.csv"));
    assert!(reason("garbage.xlsx").starts_with("unreadable"), "{}", reason("garbage.xlsx"));
    assert!(reason("none.sqlite").contains("no tables"), "{}", reason("none.sqlite"));
    assert_eq!(report.tables, 1);
}

#[test]
fn data_preparation_output_files_are_checked() {
    let sb = sandbox();
    let tables = root().join("synth/tables");
    let ws = sb.workspace(Some(&tables)).unwrap();
    let prof = synth::profile::profile(&sb, &ws).unwrap();
    let air = prof.tables.iter().find(|t| t.file == "airquality.csv").unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    let task = synth::questioner::pose("clean", air, &mut rng, "t".into()).unwrap();
    let file = tables.join("airquality.csv");
    let solve_in = sb.workspace_with_files(&[&file]).unwrap();
    let (truth, _) = synth::ground_truth(&task, &sb, &solve_in);
    let truth = truth.unwrap();
    let solved = synth::solver::solve(&task, &sb, &solve_in, false);
    let fresh = || sb.workspace_with_files(&[&file]).unwrap();
    let (verdict, _) = synth::inspector::inspect(&task, &solved, &truth, &sb, &solve_in, &fresh());
    assert_eq!(verdict, None, "{}", solved.response);
    // The same trajectory, but its output file lost a row: the checklist fails.
    let out = solve_in.path().join("airquality_clean.csv");
    let text = std::fs::read_to_string(&out).unwrap();
    let fewer: Vec<&str> = text.lines().collect();
    std::fs::write(&out, fewer[..fewer.len() - 1].join("\n") + "\n").unwrap();
    let (verdict, _) = synth::inspector::inspect(&task, &solved, &truth, &sb, &solve_in, &fresh());
    assert_eq!(verdict, Some("checklist: the output files do not satisfy the task"));
    // Feature engineering: the new column is checked in the written file.
    let feat = synth::questioner::pose("features", air, &mut rng, "f".into()).unwrap();
    let ws2 = sb.workspace_with_files(&[&file]).unwrap();
    let truth2 = synth::ground_truth(&feat, &sb, &ws2).0.unwrap();
    let solved2 = synth::solver::solve(&feat, &sb, &ws2, false);
    assert_eq!(synth::inspector::inspect(&feat, &solved2, &truth2, &sb, &ws2, &fresh()).0, None, "{}", solved2.response);
    let out2 = ws2.path().join("airquality_features.csv");
    let text2 = std::fs::read_to_string(&out2).unwrap();
    let without_z: String = text2.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n").collect();
    std::fs::write(&out2, without_z).unwrap();
    assert_eq!(synth::inspector::inspect(&feat, &solved2, &truth2, &sb, &ws2, &fresh()).0,
               Some("checklist: the output files do not satisfy the task"));
    // A wrong answer is rejected too.
    let wrong: Vec<(String, String)> = truth.iter().map(|(k, v)| (k.clone(), format!("{}", v.parse::<i64>().unwrap() + 1))).collect();
    let (verdict, _) = synth::inspector::inspect(&task, &solved, &wrong, &sb, &solve_in, &fresh());
    assert_eq!(verdict, Some("answer does not match the ground truth"));
}

/// A scripted OpenAI-compatible endpoint on 127.0.0.1: answers each POST with the next
/// canned completion and records what it was sent.
fn mock_endpoint(replies: Vec<&'static str>) -> (String, std::thread::JoinHandle<Vec<(String, serde_json::Value)>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = vec![];
        for reply in replies {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut head, mut len) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
                head += &line;
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            seen.push((head, serde_json::from_slice(&body).unwrap()));
            let out = serde_json::json!({"choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": reply}}]}).to_string();
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}", out.len()).unwrap();
        }
        seen
    });
    (url, handle)
}

#[test]
fn an_openai_compatible_teacher_drives_the_same_loop() {
    let sb = sandbox();
    let tables = tempfile::tempdir().unwrap();
    std::fs::write(tables.path().join("t.csv"), "id,x\na,1.5\nb,2.5\nc,2.0\nd,2.0\n").unwrap();
    let (url, server) = mock_endpoint(vec![
        "<Analyze>Load the table first.</Analyze>\n<Code>\n```python\nimport pandas as pd\ndf = pd.read_csv('t.csv')\nprint(df['X'].mean())\n```\n",
        "<Understand>The column is lower-case.</Understand>\n<Code>\n```python\nimport pandas as pd\ndf = pd.read_csv('t.csv')\nprint('@mean_x[%.2f]' % df['x'].mean())\n```\n",
        "<Understand>The mean is 2.00.</Understand>\n<Answer>@mean_x[2.00]</Answer>",
    ]);
    let teacher = synth::teacher::TeacherConfig { base_url: url, model: "mock-model".into(), api_key: Some("sk-test".into()),
                                                   temperature: 0.5, max_tokens: 512, max_turns: 8 };
    let out = tempfile::tempdir().unwrap();
    let cfg = SynthConfig { tables: tables.path().into(), out: out.path().join("s"), tasks: 1, seed: 0, error_rate: 0.0, teacher: Some(teacher), tokenizer: None, paraphrase: false };
    // One table with one measure: the only posable families; pick a seed whose task is `mean`.
    let ws = sb.workspace(Some(tables.path())).unwrap();
    let prof = synth::profile::profile(&sb, &ws).unwrap();
    let seed = (0..200).find(|&s| synth::pose_tasks(&prof.tables, 1, s)[0].family == "mean").unwrap();
    let report = synthesize(&SynthConfig { seed, ..cfg }, &sb, &|_, _| {}).unwrap();
    let seen = server.join().unwrap();
    assert_eq!(report.accepted, 1, "{report:?}");
    assert_eq!(report.recovered_errors, 1);
    assert_eq!(seen.len(), 3);
    let (head, first) = &seen[0];
    assert!(head.starts_with("POST /v1/chat/completions") && head.to_lowercase().contains("authorization: bearer sk-test"), "{head}");
    assert_eq!(first["model"], "mock-model");
    assert_eq!(first["stop"], serde_json::json!(["</Code>"]));
    // The observation went back as the next user turn: the sandbox's real KeyError.
    let second = seen[1].1["messages"].as_array().unwrap();
    let obs = second.last().unwrap()["content"].as_str().unwrap();
    assert!(obs.starts_with("<Execute>\n[Error]:\nTraceback") && obs.contains("KeyError: 'X'"), "{obs}");
    let trajs: Vec<Trajectory> = read_all(&out.path().join("s/trajectories")).unwrap();
    assert_eq!(trajs[0].source, "synth-teacher");
    assert_eq!(cells(&trajs[0].response).len(), 2);
    assert!(trajs[0].response.contains("</Code>\n<Execute>\n@mean_x[2.00]\n\n</Execute>\n<Understand>"));
}

#[test]
fn research_reports_must_have_their_sections_numbers_and_figure() {
    let sb = sandbox();
    let tables = root().join("synth/tables");
    let ws = sb.workspace(Some(&tables)).unwrap();
    let prof = synth::profile::profile(&sb, &ws).unwrap();
    let iris = prof.tables.iter().find(|t| t.file == "iris.csv").unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let task = synth::questioner::pose("research", iris, &mut rng, "r".into()).unwrap();
    assert_eq!(synth::questioner::kind_of(task.family), "openresearch");
    let file = tables.join("iris.csv");
    let solve_in = sb.workspace_with_files(&[&file]).unwrap();
    let truth = synth::ground_truth(&task, &sb, &solve_in).0.unwrap();
    let solved = synth::solver::solve(&task, &sb, &solve_in, false);
    let fresh = || sb.workspace_with_files(&[&file]).unwrap();
    assert_eq!(synth::inspector::inspect(&task, &solved, &truth, &sb, &solve_in, &fresh()).0, None, "{}", solved.response);
    let report = std::fs::read_to_string(solve_in.path().join("report.md")).unwrap();
    assert!(report.contains("## Conclusions") && report.contains("](figure.png)"), "{report}");
    std::fs::remove_file(solve_in.path().join("figure.png")).unwrap();
    assert_eq!(synth::inspector::inspect(&task, &solved, &truth, &sb, &solve_in, &fresh()).0,
               Some("checklist: the output files do not satisfy the task"));
}

#[test]
fn paraphrases_keep_every_name_number_and_file_or_are_dropped() {
    let statement = "How many rows of airquality.csv have `Ozone` greater than 31.5?";
    let p = synth::teacher::protected(statement);
    assert_eq!(p, vec!["`Ozone`".to_string(), "airquality.csv".into(), "31.5".into()]);
    let (url, server) = mock_endpoint(vec![
        "Count the records in airquality.csv whose `Ozone` exceeds 31.5.",
        "Count the records whose `Ozone` exceeds 31.5.", // lost the file name
    ]);
    let cfg = synth::teacher::TeacherConfig { base_url: url, model: "m".into(), api_key: None, temperature: 0.9, max_tokens: 128, max_turns: 1 };
    let kept = synth::teacher::paraphrase(statement, &cfg).unwrap();
    assert_eq!(kept.as_deref(), Some("Count the records in airquality.csv whose `Ozone` exceeds 31.5."));
    assert_eq!(synth::teacher::paraphrase(statement, &cfg).unwrap(), None);
    let seen = server.join().unwrap();
    assert_eq!(seen[0].1["messages"][0]["content"], synth::teacher::PARAPHRASE);
    assert_eq!(seen[0].1["messages"][1]["content"], statement);
    assert!(!seen[0].0.to_lowercase().contains("authorization"), "no key, no header");
}

/// A scripted batch solver: per task, its attempts as (cells' code, answer), each run for
/// real in its own workspace of the task's files.
struct Scripted(Vec<(Vec<&'static str>, &'static str)>, std::sync::Mutex<Vec<String>>);

impl synth::BatchSolver for Scripted {
    fn solve(&self, tasks: &[synth::Posed], sb: &Sandbox) -> Result<Vec<Vec<(synth::solver::Solved, sandbox::Workspace)>>, String> {
        Ok(tasks
            .iter()
            .map(|t| {
                self.1.lock().unwrap().push(format!("{} {:?} {}", t.id, t.files, t.prompt));
                let files: Vec<PathBuf> = t.files.iter().map(|f| t.tables.join(f)).collect();
                self.0
                    .iter()
                    .map(|(codes, answer)| {
                        let ws = sb.workspace_with_files(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>()).unwrap();
                        let mut response = "<Analyze>\nRead the table.\n</Analyze>\n".to_string();
                        let mut cells = vec![];
                        for code in codes {
                            let obs = sb.run(&ws, code, Mode::Stateless).observation;
                            response += &format!("<Code>\n```python\n{code}\n```\n</Code>\n<Execute>\n{obs}\n</Execute>\n");
                            cells.push((code.to_string(), obs));
                        }
                        response += &format!("<Answer>\n{answer}\n</Answer>");
                        (synth::solver::Solved { response, cells, recovered_error: false, sandbox_secs: 0.0 }, ws)
                    })
                    .collect()
            })
            .collect())
    }

    fn source(&self) -> &str {
        "synth-local:scripted"
    }
}

#[test]
fn a_batch_solver_keeps_the_first_accepted_attempt_and_guesses_are_rejected() {
    // The task: the mean of x (2.00). A right answer that no cell printed is a guess.
    let sb = sandbox();
    let tables = tempfile::tempdir().unwrap();
    std::fs::write(tables.path().join("t.csv"), "id,x\na,1.5\nb,2.5\nc,2.0\nd,2.0\n").unwrap();
    let ws = sb.workspace(Some(tables.path())).unwrap();
    let prof = synth::profile::profile(&sb, &ws).unwrap();
    let seed = (0..200).find(|&s| synth::pose_tasks(&prof.tables, 1, s)[0].family == "mean").unwrap();
    let load = "import pandas as pd\ndf = pd.read_csv('t.csv')\n";
    let guess = (vec![Box::leak(format!("{load}print(len(df))").into_boxed_str()) as &str], "@mean_x[2.00]");
    let wrong = (vec![Box::leak(format!("{load}print('@mean_x[%.2f]' % df['x'].max())").into_boxed_str()) as &str], "@mean_x[2.50]");
    let right = (vec![Box::leak(format!("{load}print('@mean_x[%.2f]' % df['x'].mean())").into_boxed_str()) as &str], "@mean_x[2.00]");
    let run = |attempts: Vec<(Vec<&'static str>, &'static str)>| {
        let out = tempfile::tempdir().unwrap();
        let cfg = SynthConfig { tables: tables.path().into(), out: out.path().join("s"), tasks: 1, seed, error_rate: 0.0, teacher: None, tokenizer: None, paraphrase: false };
        let solver = Scripted(attempts, Default::default());
        let report = synth::synthesize_with(&cfg, &sb, Some(&solver), &|_, _| {}).unwrap();
        let trajs: Vec<Trajectory> = read_all(&out.path().join("s/trajectories")).unwrap();
        (report, trajs, solver.1.into_inner().unwrap())
    };
    let (report, trajs, seen) = run(vec![guess.clone(), wrong, right.clone()]);
    assert_eq!((report.accepted, report.rejected.len()), (1, 0), "{report:?}");
    // Three attempts inspected, the first two turned down (each reason counted).
    assert_eq!((report.attempts, report.attempts_rejected.values().sum::<usize>()), (3, 2), "{report:?}");
    assert_eq!(report.attempts_rejected.get("an answer no cell printed"), Some(&1), "{report:?}");
    assert_eq!(trajs[0].source, "synth-local:scripted");
    assert!(trajs[0].response.contains("df['x'].mean()") && trajs[0].response.contains("<Execute>\n@mean_x[2.00]\n"), "{}", trajs[0].response);
    // It was given the task as the model sees it: the DeepAnalyze prompt and the file.
    assert_eq!(seen.len(), 1);
    assert!(seen[0].contains("[\"t.csv\"]") && seen[0].contains("# Instruction") && seen[0].contains("\"name\": \"t.csv\""), "{seen:?}");
    let (report, trajs, _) = run(vec![guess]);
    assert_eq!((report.accepted, trajs.len()), (0, 0));
    assert_eq!(report.rejected.get("an answer no cell printed"), Some(&1), "{report:?}");
    // Grounding reads printed `@name[...]`, text, and numbers at the answer's decimals.
    let cell = |obs: &str| vec![(String::new(), obs.to_string())];
    assert!(synth::inspector::grounded("@m[5.07]", &cell("mean 5.0733")));
    assert!(!synth::inspector::grounded("@m[5.07]", &cell("mean 5.0789")));
    assert!(synth::inspector::grounded("@s[setosa]", &cell("most common: Setosa")));
    assert!(synth::inspector::grounded("@n[13]", &cell("@n[13]")) && !synth::inspector::grounded("@n[13]", &cell("@n[11]")));
}
