//! The `trainer` binary as users and scripts call it (shared/design/cli.md): `score` and
//! `generate` against transformers' numbers and against the model crate, and one-line
//! errors on bad input.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer")).args(args).output().expect("run trainer")
}

fn ok_json(args: &[&str]) -> Value {
    let out = trainer(args);
    assert!(out.status.success(), "trainer {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e})"))
}

pub fn err_line(args: &[&str]) -> String {
    let out = trainer(args);
    assert!(!out.status.success(), "trainer {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one-line reason expected, got:\n{err}");
    err
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn score_prints_transformers_logprobs_and_top5() {
    let dir = root().join("model/tests/fixtures/parity/untied_gqa2_headdim_bf16_sharded");
    let exp: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let ids: Vec<String> = exp["input_ids"][1].as_array().unwrap().iter().map(|x| x.to_string()).collect();
    let got = ok_json(&["score", "--model", dir.to_str().unwrap(), "--ids", &ids.join(",")]);
    assert_eq!(got["ids"].as_array().unwrap().len(), ids.len());
    let want = exp["next_token_logprobs"][1].as_array().unwrap();
    let ours = got["next_token_logprobs"].as_array().unwrap();
    assert_eq!(ours.len(), want.len());
    for (a, b) in ours.iter().zip(want) {
        assert!((f(a) - f(b)).abs() < 1e-4, "{a} vs {b}");
    }
    let top = got["last_top5"].as_array().unwrap();
    for (a, b) in top.iter().zip(exp["last_top5"][1].as_array().unwrap()) {
        assert_eq!(a[0], b[0]);
        assert!((f(&a[1]) - f(&b[1])).abs() < 1e-4);
    }
}

/// A tiny random checkpoint on the real Qwen3 tokenizer, made by `trainer init-model`.
fn tiny_checkpoint() -> tempfile::TempDir {
    let tok = root().join("assets/qwen3-tokenizer");
    assert!(tok.exists(), "run scripts/setup-assets.sh first");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("ck");
    let o = trainer(&["init-model", "--config", root().join("configs/tiny-qwen3.json").to_str().unwrap(),
                      "--tokenizer", tok.to_str().unwrap(), "--out", out.to_str().unwrap(), "--seed", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d
}

#[test]
fn generate_and_score_agree_on_a_real_tokenizer_and_stop_strings_stop() {
    let d = tiny_checkpoint();
    let ck = d.path().join("ck");
    let ck = ck.to_str().unwrap();
    // Text is encoded as given; the tags are single tokens after init-model added them.
    let s = ok_json(&["score", "--model", ck, "--text", "<Code>\nprint(1)\n</Code>"]);
    let ids = s["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 7);
    assert!(ids[0].as_u64().unwrap() >= 151669 && ids.last().unwrap().as_u64().unwrap() >= 151669);

    // At temperature 1 the policy is the model's own distribution (top-k/top-p only filter
    // the draw), so the reported log-probs are what `score` computes on prompt + output.
    let g = ok_json(&["generate", "--model", ck, "--prompt", "The mean of the column is", "--max-new-tokens", "12",
                      "--temperature", "1.0", "--top-k", "50", "--top-p", "0.9", "--seed", "5", "--json"]);
    let new: Vec<u64> = g["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(new.len(), 12);
    assert_eq!(g["finish_reason"], "length");
    let all: Vec<String> = g["prompt_ids"].as_array().unwrap().iter().chain(g["ids"].as_array().unwrap())
        .map(|x| x.to_string()).collect();
    let s = ok_json(&["score", "--model", ck, "--ids", &all.join(",")]);
    let scored = &s["next_token_logprobs"].as_array().unwrap()[all.len() - 13..];
    for (a, b) in g["logprobs"].as_array().unwrap().iter().zip(scored) {
        assert!((f(a) - f(b)).abs() < 1e-4, "{a} vs {b}");
    }
    // Same seed, same output; a stop string taken from the middle of it ends generation there.
    let text = g["text"].as_str().unwrap().to_string();
    let g2 = ok_json(&["generate", "--model", ck, "--prompt", "The mean of the column is", "--max-new-tokens", "12",
                       "--temperature", "1.0", "--top-k", "50", "--top-p", "0.9", "--seed", "5", "--json"]);
    assert_eq!(g2["ids"], g["ids"]);
    let tok = tokenizers::Tokenizer::from_file(root().join("assets/qwen3-tokenizer/tokenizer.json")).unwrap();
    let ids32: Vec<u32> = new.iter().map(|&x| x as u32).collect();
    assert!(text.starts_with(&tok.decode(&ids32[..4], false).unwrap()));
    // The first token from the 5th on whose text is non-blank and new to the output so far.
    let cut = (4..12).find_map(|k| {
        let before = tok.decode(&ids32[..k], false).unwrap();
        let piece = tok.decode(&ids32[k..=k], false).unwrap();
        let usable = !piece.trim().is_empty() && !piece.contains('\u{fffd}') && !before.contains(piece.as_str());
        usable.then_some((k, piece))
    });
    let cut = cut.expect("some token of the output is a usable stop string");
    let (k, stop) = cut;
    let g3 = ok_json(&["generate", "--model", ck, "--prompt", "The mean of the column is", "--max-new-tokens", "12",
                       "--temperature", "1.0", "--top-k", "50", "--top-p", "0.9", "--seed", "5", "--stop", &stop, "--json"]);
    assert_eq!(g3["finish_reason"]["stop_string"], stop.as_str());
    assert_eq!(g3["ids"].as_array().unwrap()[..], g["ids"].as_array().unwrap()[..=k]);

    // --precision bf16: the same draw's log-probs within bf16 rounding of f32's `score`.
    let b = ok_json(&["generate", "--model", ck, "--prompt", "The mean of the column is", "--max-new-tokens", "12",
                      "--temperature", "1.0", "--seed", "5", "--json", "--precision", "bf16"]);
    let all: Vec<String> = b["prompt_ids"].as_array().unwrap().iter().chain(b["ids"].as_array().unwrap()).map(|x| x.to_string()).collect();
    let s = ok_json(&["score", "--model", ck, "--ids", &all.join(",")]);
    let scored = &s["next_token_logprobs"].as_array().unwrap()[all.len() - 13..];
    let worst = b["logprobs"].as_array().unwrap().iter().zip(scored).map(|(a, b)| (f(a) - f(b)).abs()).fold(0.0, f64::max);
    assert!(worst > 1e-6 && worst < 0.1, "bf16 vs f32 log-probs: max |Δ| {worst}");
}

#[test]
fn chat_messages_go_through_the_template() {
    let d = tiny_checkpoint();
    let ck = d.path().join("ck");
    let msgs = d.path().join("m.json");
    std::fs::write(&msgs, r#"{"messages": [{"role": "user", "content": "hi"}]}"#).unwrap();
    let g = ok_json(&["generate", "--model", ck.to_str().unwrap(), "--messages", msgs.to_str().unwrap(),
                      "--max-new-tokens", "2", "--json"]);
    // Qwen3's template: <|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n
    let want = [151644u64, 872, 198, 6023, 151645, 198, 151644, 77091, 198];
    let got: Vec<u64> = g["prompt_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(got, want);
}

#[test]
fn bad_input_gets_a_one_line_error() {
    let fixture = root().join("model/tests/fixtures/parity/tied_gqa1_f32");
    let fx = fixture.to_str().unwrap();
    assert!(err_line(&["score", "--model", "/nonexistent", "--ids", "1,2"]).contains("/nonexistent"));
    assert!(err_line(&["score", "--model", fx, "--ids", "1,500"]).contains("outside the vocabulary"));
    assert!(err_line(&["score", "--model", fx, "--text", "hi"]).contains("tokenizer.json"));
    assert!(err_line(&["generate", "--model", fx, "--prompt", "x", "--top-p", "0"]).contains("--top-p"));
    assert!(err_line(&["generate", "--model", fx, "--prompt", "x", "--precision", "fp8"]).contains("expected f32 or bf16"));
    let d = tempfile::tempdir().unwrap();
    let msgs = d.path().join("m.json");
    std::fs::write(&msgs, r#"[{"role": "user"}]"#).unwrap();
    let tiny = tiny_checkpoint();
    let ck = tiny.path().join("ck");
    let e = err_line(&["generate", "--model", ck.to_str().unwrap(), "--messages", msgs.to_str().unwrap()]);
    assert!(e.contains("m.json") && e.contains("messages[0]"), "{e}");
    let e = err_line(&["--stage", "rl", "configs/stage3.toml"]);
    assert!(e.contains("configs/stage3.toml"), "{e}");
    let e = err_line(&["eval", "--model", fx, "--tasks", ".", "--devices", "0"]);
    assert!(e.contains("--devices 0") && e.contains("at least one device"), "{e}");
}

fn sandbox_python() -> String {
    std::env::var("DEEPANALYZE_SANDBOX_PYTHON")
        .unwrap_or_else(|_| root().join(".venv-sandbox/bin/python").display().to_string())
}

fn exec(ws: &Path, code: &str, extra: &[&str]) -> Output {
    use std::io::Write;
    let py = sandbox_python();
    let mut args = vec!["exec", "--workspace", ws.to_str().unwrap(), "--python", &py];
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(code.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn exec_runs_a_cell_on_a_real_table_like_the_published_environment() {
    let tables = root().join("../shared/data/dabench-dev/tables");
    let ws = tempfile::tempdir().unwrap();
    std::fs::copy(tables.join("abalone.csv"), ws.path().join("abalone.csv")).unwrap();
    let code = "import pandas as pd\ndf = pd.read_csv('abalone.csv')\nprint(df.shape)\nprint(df.describe().round(3))\ndf.head(5).to_csv('head.csv', index=False)\nprint(df['nope'])";
    // The published way: a fresh interpreter formatting by the same rules.
    let mut reference = Command::new(sandbox_python())
        .arg(root().join("sandbox/reference/published_exec.py"))
        .current_dir(ws.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    reference.stdin.take().unwrap().write_all(code.as_bytes()).unwrap();
    let want = String::from_utf8(reference.wait_with_output().unwrap().stdout).unwrap();
    std::fs::remove_file(ws.path().join("head.csv")).unwrap();
    let out = exec(ws.path(), code, &["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["observation"].as_str().unwrap(), want);
    assert!(want.starts_with("[Error]:\nTraceback") && want.contains("KeyError: 'nope'"));
    assert_eq!(v["status"], "error");
    assert_eq!(v["error_type"], "KeyError");
    assert_eq!(v["files_changed"], serde_json::json!(["head.csv"]));
    assert!(ws.path().join("head.csv").exists(), "files the cell wrote come back to the workspace");
    // Plain mode prints just the observation.
    let out = exec(ws.path(), "print('plain')", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "plain\n");
    let out = exec(ws.path(), "while True: pass", &["--timeout", "1", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["observation"], "[Error]\nPython code execution timed out after 1.0 seconds.");
}

#[test]
fn data_import_and_inspect_on_the_dabench_split() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("dabench");
    let o = trainer(&["data", "import", "--from", "dabench", root().join("../shared/data/dabench-dev").to_str().unwrap(),
                      "--out", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("wrote 105 records"));
    let o = trainer(&["data", "inspect", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("105 `rl_task` records") && text.contains("kinds: qa 105"), "{text}");
    // Importing into a folder that already holds shards is refused, in one line.
    let e = err_line(&["data", "import", "--from", "dabench", root().join("../shared/data/dabench-dev").to_str().unwrap(),
                       "--out", dir.to_str().unwrap()]);
    assert!(e.contains("_manifest.json") && e.contains("already holds shards"), "{e}");
    let e = err_line(&["data", "inspect", "/nonexistent"]);
    assert!(e.contains("/nonexistent"), "{e}");
}

#[test]
fn synth_with_a_local_checkpoint_inspects_each_of_its_attempts() {
    // A random model as the Solver: its attempts run in the sandbox and are inspected, and
    // none is kept (the Inspector's choice among attempts is tested in the synth crate).
    let d = tiny_checkpoint();
    let tables = d.path().join("tables");
    std::fs::create_dir(&tables).unwrap();
    std::fs::copy(root().join("../shared/data/dabench-dev/tables/abalone.csv"), tables.join("abalone.csv")).unwrap();
    let out = d.path().join("synth");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["synth", "--tables", tables.to_str().unwrap(), "--out", out.to_str().unwrap(), "--tasks", "3", "--teacher", "local",
                                  "--samples", "2", "--max-turns", "1", "--max-new-tokens", "12"].iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| Command::new(env!("CARGO_BIN_EXE_trainer")).args(a).env(sandbox::PYTHON_ENV, sandbox_python()).output().unwrap();
    let o = run(args(&[]));
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--teacher local needs --model"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(args(&["--model", d.path().join("ck").to_str().unwrap()]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!((report["posed"].as_u64(), report["accepted"].as_u64()), (Some(3), Some(0)), "{report}");
    let rejected: u64 = report["rejected"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(rejected + report["ground_truth_failed"].as_u64().unwrap(), 3, "{report}");
    assert!(report["rejected"].as_object().unwrap().keys().all(|k| k.starts_with("format")), "a random model's text is not a trajectory: {report}");
    // Every task with a ground truth is still an RL task.
    let tasks: Vec<datasets::RlTask> = datasets::read_all(&out.join("rl_tasks")).unwrap();
    assert_eq!(tasks.len() as u64, 3 - report["ground_truth_failed"].as_u64().unwrap());
}

#[test]
fn ask_gives_the_model_its_files_and_runs_its_cells() {
    let d = tiny_checkpoint();
    let table = d.path().join("prices.csv");
    std::fs::write(&table, "item,price\na,1.5\nb,2.5\n").unwrap();
    let run = |files: &[&Path], extra: &[&str]| {
        let mut args: Vec<String> = vec!["ask".into(), "--model".into(), d.path().join("ck").display().to_string(), "--question".into(), "Mean price?".into(), "--files".into()];
        args.extend(files.iter().map(|f| f.display().to_string()));
        args.extend(["--max-turns", "2", "--max-new-tokens", "16"].iter().chain(extra).map(|s| s.to_string()));
        Command::new(env!("CARGO_BIN_EXE_trainer")).args(args).env(sandbox::PYTHON_ENV, sandbox_python()).output().unwrap()
    };
    let o = run(&[&table], &["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    // The published prompt: the question, then each file by name and size (21 bytes).
    assert_eq!(v["prompt"], "# Instruction\nMean price?\n\n# Data\nFile 1:\n{\"name\": \"prices.csv\", \"size\": \"0.0KB\"}");
    assert!(v["text"].is_string() && v["cells"].as_u64().is_some() && v["files_written"].as_array().unwrap().is_empty(), "{v}");
    // Two files of one name, or a missing one: one-line errors naming them.
    let other = d.path().join("sub");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(&table, other.join("prices.csv")).unwrap();
    let o = run(&[&table, &other.join("prices.csv")], &[]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("two files are named prices.csv"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[&d.path().join("missing.csv")], &[]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("missing.csv"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn eval_runs_on_a_dabench_folder_and_summarizes_its_rollouts() {
    let d = tiny_checkpoint();
    let out = d.path().join("eval");
    let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["eval", "--model", d.path().join("ck").to_str().unwrap(), "--tasks", root().join("../shared/data/dabench-dev").to_str().unwrap(),
               "--limit", "3", "--max-turns", "1", "--max-new-tokens", "12", "--out", out.to_str().unwrap()])
        .env(sandbox::PYTHON_ENV, sandbox_python())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows: Vec<Value> = std::fs::read_to_string(out.join("rollouts.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["task_id"].as_str().unwrap().starts_with("dabench-") && r["correct"].is_boolean()));
    // The summary is the records' shares (a random model: nothing right, nothing well formed).
    assert_eq!(summary["tasks"], 3);
    assert_eq!(f(&summary["correct"]), rows.iter().filter(|r| r["correct"] == true).count() as f64 / 3.0);
    assert_eq!(f(&summary["well_formed"]), 0.0);
    // DABench's levels (questions.jsonl) break the summary down.
    let levels = summary["by_level"].as_object().unwrap();
    assert!(levels.keys().all(|l| ["easy", "medium", "hard"].contains(&l.as_str())), "{summary}");
    assert_eq!(levels.values().map(|l| l["tasks"].as_u64().unwrap()).sum::<u64>(), 3);
    // --max-rows 1: one task decoded at a time (greedy), the same rollouts.
    let waves = d.path().join("eval-waves");
    let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["eval", "--model", d.path().join("ck").to_str().unwrap(), "--tasks", root().join("../shared/data/dabench-dev").to_str().unwrap(),
               "--limit", "3", "--max-turns", "1", "--max-new-tokens", "12", "--max-rows", "1", "--out", waves.to_str().unwrap()])
        .env(sandbox::PYTHON_ENV, sandbox_python())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(waves.join("rollouts.jsonl")).unwrap(), std::fs::read_to_string(out.join("rollouts.jsonl")).unwrap());
    // Two ranks joined over TCP share the tasks out: rank 0 writes and prints the same.
    let ranks = d.path().join("eval-ranks");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let children: Vec<_> = (0..2).map(|r| Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["eval", "--model", d.path().join("ck").to_str().unwrap(), "--tasks", root().join("../shared/data/dabench-dev").to_str().unwrap(),
               "--limit", "3", "--max-turns", "1", "--max-new-tokens", "12", "--out", ranks.to_str().unwrap()])
        .envs([("WORLD_SIZE", "2".to_string()), ("RANK", r.to_string()), ("MASTER_ADDR", "127.0.0.1".into()), ("MASTER_PORT", port.clone())])
        .env(sandbox::PYTHON_ENV, sandbox_python()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()).collect();
    let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    assert!(outs.iter().all(|o| o.status.success()), "{}", String::from_utf8_lossy(&outs[1].stderr));
    assert_eq!(serde_json::from_slice::<Value>(&outs[0].stdout).unwrap(), summary);
    assert!(outs[1].stdout.is_empty());
    assert_eq!(std::fs::read_to_string(ranks.join("rollouts.jsonl")).unwrap(), std::fs::read_to_string(out.join("rollouts.jsonl")).unwrap());
    // Two sampled rollouts a task: both written, the summary over tasks with pass@1 and @2.
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--model", d.path().join("ck").to_str().unwrap(), "--tasks", root().join("../shared/data/dabench-dev").to_str().unwrap(),
                            "--limit", "2", "--max-turns", "1", "--max-new-tokens", "8", "--samples", "2"].into_iter().map(String::from).collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        Command::new(env!("CARGO_BIN_EXE_trainer")).args(args).env(sandbox::PYTHON_ENV, sandbox_python()).output().unwrap()
    };
    let o = eval(&[]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--temperature"), "{}", String::from_utf8_lossy(&o.stderr));
    let sampled = d.path().join("eval-sampled");
    let o = eval(&["--temperature", "1.0", "--out", sampled.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((summary["tasks"].as_u64(), summary["samples"].as_u64()), (Some(2), Some(2)), "{summary}");
    assert_eq!(summary["pass_at"].as_object().unwrap().keys().collect::<Vec<_>>(), ["1", "2"]);
    let rows: Vec<Value> = std::fs::read_to_string(sampled.join("rollouts.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.iter().map(|r| r["sample"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 0, 1]);
    assert_eq!(&std::fs::read(sampled.join("pass_at_k.png")).unwrap()[..4], b"\x89PNG");
}
