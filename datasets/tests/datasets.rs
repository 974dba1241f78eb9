//! The datasets crate on real data (the DABench dev split, the real Qwen3 tokenizer) and
//! against independent references: hand-built token expectations, the parquet readers of
//! pandas/pyarrow/polars/duckdb, and brute-force checks of the packing mask.
use datasets::import::{import_dabench, import_rl, import_sft, OnBad};
use datasets::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn dabench() -> PathBuf {
    root().join("../shared/data/dabench-dev")
}

fn python(venv: &str, code: &str, cwd: &Path) -> String {
    let py = root().join(venv).join("bin/python");
    assert!(py.exists(), "{} missing: run scripts/setup-sandbox.sh and scripts/setup-pytools.sh", py.display());
    let out = Command::new(py).args(["-c", code]).current_dir(cwd).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn dabench_imports_to_105_qa_tasks_whose_labels_survive() {
    let out = tempfile::tempdir().unwrap();
    let report = import_dabench(&dabench(), out.path(), OnBad::Error).unwrap();
    assert_eq!((report.written, report.skipped), (105, 0));
    let tasks: Vec<RlTask> = read_all(out.path()).unwrap();
    assert_eq!(tasks.len(), 105);
    // Labels, compared with labels.jsonl read independently.
    let labels = std::fs::read_to_string(dabench().join("labels.jsonl")).unwrap();
    for line in labels.lines() {
        let l: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = tasks.iter().find(|t| t.id == format!("dabench-{}", l["id"])).unwrap();
        let gt: serde_json::Value = serde_json::from_str(t.ground_truth.as_deref().unwrap()).unwrap();
        assert_eq!(gt, l["common_answers"]);
        assert_eq!(t.kind, "qa");
        assert!(out.path().join(&t.workspace).join(&t.files[0]).exists());
    }
    let t = tasks.iter().find(|t| t.id == "dabench-0").unwrap();
    let size = std::fs::metadata(dabench().join("tables/test_ave.csv")).unwrap().len() as f64 / 1024.0;
    let want_tail = format!("\n\n# Data\nFile 1:\n{{\"name\": \"test_ave.csv\", \"size\": \"{size:.1}KB\"}}");
    assert!(t.prompt.starts_with("# Instruction\nCalculate the mean fare paid by the passengers.\n"), "{}", t.prompt);
    assert!(t.prompt.ends_with(&want_tail), "{}", t.prompt);
    // Ordinary parquet for the tools people use.
    let n = python(".venv-sandbox", "import pandas as pd, pyarrow.dataset as ds\nprint(len(pd.read_parquet('.')), ds.dataset('.', format='parquet').count_rows())", out.path());
    assert_eq!(n.trim(), "105 105");
    let n = python(".venv-tools", "import polars as pl, duckdb\nprint(pl.read_parquet('part-*.parquet').height, duckdb.sql(\"select count(*) from 'part-*.parquet'\").fetchone()[0])", out.path());
    assert_eq!(n.trim(), "105 105");
}

fn qwen3() -> (model::Tokenizer, model::ChatTemplate) {
    let dir = root().join("assets/qwen3-tokenizer");
    assert!(dir.exists(), "run scripts/setup-assets.sh");
    let mut tok = model::Tokenizer::from_dir(&dir).unwrap();
    tok.add_deepanalyze_tags();
    let template = model::ChatTemplate::from_dir(&dir, &tok.config).unwrap();
    (tok, template)
}

const ANALYZE: &str = "<Analyze>Count the rows.</Analyze>\n<Code>\n```python\nimport pandas as pd\nprint(len(pd.read_csv('a.csv')))\n```\n</Code>\n";
const OBSERVATION: &str = "<Execute>\n120\n</Execute>";
const ANSWER: &str = "\n<Understand>120 rows.</Understand>\n<Answer>120</Answer>";

fn published_sft_file(dir: &Path) -> PathBuf {
    let p = dir.join("agentic.jsonl");
    let sample = serde_json::json!({"messages": [
        {"role": "system", "content": "You are a data scientist."},
        {"role": "user", "content": "How many rows?"},
        {"role": "assistant", "content": format!("{ANALYZE}{OBSERVATION}{ANSWER}")}]});
    let bad = serde_json::json!({"messages": [{"role": "user", "content": "no answer"}]});
    std::fs::write(&p, format!("{sample}\n{bad}\n")).unwrap();
    p
}

#[test]
fn published_sft_sample_tokenizes_with_the_right_spans_masked() {
    let dir = tempfile::tempdir().unwrap();
    let input = published_sft_file(dir.path());
    let e = import_sft(&[input.clone()], &dir.path().join("strict"), None, OnBad::Error).unwrap_err().to_string();
    assert!(e.contains("agentic.jsonl") && e.contains("row 1") && e.contains("`messages`"), "{e}");
    let report = import_sft(&[input], &dir.path().join("shards"), None, OnBad::Skip).unwrap();
    assert_eq!((report.written, report.skipped), (1, 1));
    let samples: Vec<SftSample> = read_all(&dir.path().join("shards")).unwrap();
    assert_eq!(samples[0].ability, "agentic");

    let (tok, _) = qwen3();
    // The DeepAnalyze template, built by hand piece by piece: prompt (context), the model's
    // analysis and code (trained), the observation with its tags (context), the answer and
    // the closing EOS (trained).
    let da = model::ChatTemplate::deepanalyze();
    let st = SampleTokenizer { tokenizer: &tok, template: &da };
    let got = st.sft(&samples[0]).unwrap();
    let pieces = [
        ("<｜begin▁of▁sentence｜>You are a data scientist.<｜User｜>How many rows?<｜Assistant｜>", 0u8),
        (ANALYZE, 1),
        (OBSERVATION, 0),
        (&format!("{ANSWER}<｜end▁of▁sentence｜>"), 1),
    ];
    let (mut ids, mut mask) = (vec![], vec![]);
    for (text, m) in pieces {
        let t = tok.encode(text).unwrap();
        mask.extend(std::iter::repeat_n(m, t.len()));
        ids.extend(t);
    }
    assert_eq!(got.ids, ids);
    assert_eq!(got.mask, mask);
    assert!(!got.boundary_drift);
    let exec_ids = tok.encode(OBSERVATION).unwrap();
    assert_eq!(exec_ids[0], tok.token_to_id("<Execute>").unwrap());

    // Qwen3's own template, which has no `execute` role: the observation is spliced into
    // the assistant stream and masked the same way; <|im_end|> (EOS) is trained.
    let (tok, qwen) = qwen3();
    let st = SampleTokenizer { tokenizer: &tok, template: &qwen };
    let msgs = vec![
        Message::new("user", "How many rows?"),
        Message::new("assistant", ANALYZE.trim_end()),
        Message::new("execute", "120"),
        Message::new("assistant", ANSWER.trim_start()),
    ];
    let t = st.messages(&msgs).unwrap();
    let text = tok.decode(&t.ids).unwrap();
    let trained: Vec<u32> = t.ids.iter().zip(&t.mask).filter(|(_, &m)| m == 1).map(|(&i, _)| i).collect();
    let trained_text = tok.decode(&trained).unwrap();
    assert!(text.contains("<Execute>\n120\n</Execute>"));
    assert!(!trained_text.contains("120\n</Execute>") && !trained_text.contains("<Execute>"));
    assert!(!trained_text.contains("How many rows?") && trained_text.contains("<Answer>120</Answer><|im_end|>"));
    assert!(trained_text.contains("<Analyze>Count the rows.</Analyze>"));
    assert!(!t.boundary_drift);
}

fn doc(len: usize, tag: u32) -> Tokenized {
    Tokenized { ids: (0..len as u32).map(|i| tag * 1000 + i).collect(), mask: vec![1; len], boundary_drift: false }
}

#[test]
fn packing_never_lets_attention_cross_documents() {
    let lens = [30, 5, 64, 17, 40, 1, 23, 64, 9, 33, 80, 12];
    let docs: Vec<Tokenized> = lens.iter().enumerate().map(|(i, &n)| doc(n, i as u32 + 1)).collect();
    let cfg = PackConfig { seq_len: 64, overlong: Overlong::Truncate, pad_id: 0 };
    let (seqs, report) = pack(&docs, &cfg);
    assert_eq!(report.truncated, 1);
    assert_eq!(report.documents, lens.len());
    let total: usize = lens.iter().map(|&n| n.min(64)).sum();
    assert_eq!(report.tokens, total);
    assert!(seqs.len() <= total.div_ceil(64) + 1, "first-fit-decreasing should be near the bound");
    let mut seen = vec![];
    for s in &seqs {
        assert_eq!(s.ids.len(), 64);
        let doc = s.doc_of();
        let m = s.attention_mask();
        for q in 0..64 {
            for k in 0..64 {
                let want = k <= q && doc[q].is_some() && doc[q] == doc[k];
                assert_eq!(m[q * 64 + k], want, "q {q} k {k}");
                // And by the token ids themselves: same document tag, earlier position.
                if m[q * 64 + k] {
                    assert_eq!(s.ids[q] / 1000, s.ids[k] / 1000);
                }
            }
        }
        let mut start = 0;
        for &n in &s.doc_lens {
            assert_eq!(s.positions[start..start + n], (0..n as u32).collect::<Vec<_>>()[..]);
            assert_eq!(s.mask[start], 0, "a document's first token has nothing to be predicted from");
            assert!(s.mask[start + 1..start + n].iter().all(|&x| x == 1));
            seen.push(s.ids[start] / 1000);
            start += n;
        }
        assert!(s.mask[start..].iter().all(|&x| x == 0), "padding is never trained");
    }
    seen.sort();
    assert_eq!(seen, (1..=lens.len() as u32).collect::<Vec<_>>(), "every document exactly once");
    let (_, dropped) = pack(&docs, &PackConfig { overlong: Overlong::Drop, ..cfg });
    assert_eq!((dropped.dropped, dropped.documents), (1, lens.len() - 1));
}

#[test]
fn a_loader_stopped_and_resumed_yields_the_same_sequence() {
    let make = || {
        Loader::new(
            vec![
                Source { name: "a".into(), items: (0..7).map(|i| format!("a{i}")).collect(), weight: 3.0 },
                Source { name: "b".into(), items: (0..5).map(|i| format!("b{i}")).collect(), weight: 1.0 },
            ],
            42,
        )
    };
    let mut straight = make();
    let all: Vec<String> = straight.next_items(100).into_iter().cloned().collect();
    let mut first = make();
    let head: Vec<String> = first.next_items(37).into_iter().cloned().collect();
    let saved = serde_json::to_string(first.cursor()).unwrap();
    drop(first);
    let mut resumed = make().resume(serde_json::from_str(&saved).unwrap());
    let tail: Vec<String> = resumed.next_items(63).into_iter().cloned().collect();
    assert_eq!([head, tail].concat(), all);
    // Every epoch of a source is a permutation of it; weights show in the mixture.
    let a: Vec<&String> = all.iter().filter(|s| s.starts_with('a')).take(7).collect();
    let mut sorted: Vec<String> = a.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(sorted, (0..7).map(|i| format!("a{i}")).collect::<Vec<_>>());
    let share = all.iter().filter(|s| s.starts_with('a')).count();
    assert!((60..=90).contains(&share), "weight 3:1 gave {share}/100");
    let mut other = Loader::new(vec![Source { name: "a".into(), items: (0..7).collect::<Vec<u32>>(), weight: 1.0 }], 43);
    let mut same = Loader::new(vec![Source { name: "a".into(), items: (0..7).collect::<Vec<u32>>(), weight: 1.0 }], 42);
    assert_ne!(other.next_items(7), same.next_items(7));
}

#[test]
fn bad_shards_and_rows_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tasks");
    import_dabench(&dabench(), &out, OnBad::Error).unwrap();
    // Wrong record kind.
    let e = read_all::<SftSample>(&out).unwrap_err().to_string();
    assert!(e.contains("manifest.json") && e.contains("`kind`") && e.contains("rl_task"), "{e}");
    // A truncated shard: the checksum names it; read directly, parquet does.
    let part = out.join("part-00000.parquet");
    let bytes = std::fs::read(&part).unwrap();
    std::fs::write(&part, &bytes[..bytes.len() / 2]).unwrap();
    let e = read_all::<RlTask>(&out).unwrap_err().to_string();
    assert!(e.contains("part-00000.parquet") && e.contains("checksum"), "{e}");
    let e = read_shard::<RlTask>(&part).unwrap_err().to_string();
    assert!(e.contains("part-00000.parquet") && e.contains("not a valid parquet"), "{e}");
    // A parquet file with the wrong schema (written by pyarrow).
    python(".venv-sandbox", "import pyarrow as pa, pyarrow.parquet as pq\npq.write_table(pa.table({'id': ['x'], 'ability': ['a']}), 'wrong.parquet')", dir.path());
    let e = read_shard::<SftSample>(&dir.path().join("wrong.parquet")).unwrap_err().to_string();
    assert!(e.contains("wrong.parquet") && e.contains("`source` missing"), "{e}");
    // A writer that never finished leaves its complete shards listed, marked incomplete.
    let crashed = dir.path().join("crashed");
    let mut w = ShardWriter::<SftSample>::create(&crashed, 1).unwrap();
    let s = SftSample { id: "1".into(), ability: "a".into(), source: "s".into(), messages: vec![Message::new("assistant", "x")], difficulty: None };
    w.write(s.clone()).unwrap();
    drop(w);
    let m = Manifest::read(&crashed).unwrap();
    assert_eq!((m.complete, m.rows, m.shards.len()), (false, 1, 1));
    assert!(read_all::<SftSample>(&crashed).unwrap_err().to_string().contains("incomplete"));
    assert_eq!(read_shard::<SftSample>(&crashed.join("part-00000.parquet")).unwrap(), vec![s]);
    // An unknown role and an unknown tag in a published sample.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"robot\", \"content\": \"a\"}]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"<Analyze>x</Analyze><Analyse>y</Analyse>\"}]}\n").unwrap();
    let e = import_sft(&[bad.clone()], &dir.path().join("b1"), None, OnBad::Error).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl: row 0: field `messages[1].role`: unknown role `robot`"), "{e}");
    let r = import_sft(&[bad], &dir.path().join("b2"), None, OnBad::Skip).unwrap();
    assert_eq!((r.written, r.skipped), (0, 2));
    assert!(r.skip_reasons[1].contains("unknown tag `<Analyse>`"), "{:?}", r.skip_reasons);
}

#[test]
fn published_rl_parquet_imports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workspaces/w1")).unwrap();
    std::fs::write(dir.path().join("workspaces/w1/sales.csv"), "a\n1\n").unwrap();
    python(".venv-sandbox", r##"import pyarrow as pa, pyarrow.parquet as pq
rows = [
  {"prompt": [{"role": "user", "content": "# Instruction\nSum a.\n\n# Data\nFile 1:\n{}"}],
   "reward_spec": {"method": "qa", "ground_truth": "1", "function": "exact"}, "data": "qa", "workspace_id": "w1"},
  {"prompt": [{"role": "user", "content": "Write a report."}],
   "reward_spec": {"method": "judge", "ground_truth": "", "function": "report"}, "data": "openresearch", "workspace_id": "w1"},
  {"prompt": [{"role": "user", "content": "?"}],
   "reward_spec": {"method": "x", "ground_truth": "", "function": ""}, "data": "mystery", "workspace_id": "w1"},
]
pq.write_table(pa.Table.from_pylist(rows), 'rl.parquet')"##, dir.path());
    let input = dir.path().join("rl.parquet");
    let e = import_rl(&input, None, &dir.path().join("o1"), OnBad::Error).unwrap_err().to_string();
    assert!(e.contains("rl.parquet: row 2: field `data`"), "{e}");
    let r = import_rl(&input, None, &dir.path().join("o2"), OnBad::Skip).unwrap();
    assert_eq!((r.written, r.skipped), (2, 1));
    let tasks: Vec<RlTask> = read_all(&dir.path().join("o2")).unwrap();
    assert_eq!(tasks[0].kind, "qa");
    assert_eq!(tasks[0].ground_truth.as_deref(), Some("1"));
    assert_eq!(tasks[0].files, vec!["sales.csv".to_string()]);
    assert_eq!(tasks[1].kind, "openresearch");
    assert!(tasks[0].prompt.starts_with("# Instruction\nSum a."));
}
