//! Importers for the published formats: DeepAnalyze SFT data (messages lists, as
//! DataScience-Instruct-500K ships them, in JSON, JSONL or parquet), the DeepAnalyze RL
//! parquet (prompt, reward_spec{method, ground_truth, function}, data, workspace_id), and
//! InfiAgent-DABench (questions + labels + tables) as qa tasks. Bad rows are an error
//! naming file, row and field, or a counted skip.
use crate::arrow_json::parquet_rows;
use crate::error::{file, io, Error, Result};
use crate::records::{Message, RlTask, SftSample, TASK_KINDS};
use crate::shards::ShardWriter;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

pub const DEFAULT_SHARD_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBad {
    Error,
    Skip,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ImportReport {
    pub written: usize,
    pub skipped: usize,
    /// The first few reasons rows were skipped.
    pub skip_reasons: Vec<String>,
}

impl ImportReport {
    /// Writes a good row; a bad one is an error or a counted skip.
    fn take<R: crate::Record>(&mut self, w: &mut ShardWriter<R>, row: Result<R>, on_bad: OnBad) -> Result<()> {
        match row {
            Ok(r) => {
                w.write(r)?;
                self.written += 1;
                Ok(())
            }
            Err(e) => self.bad(on_bad, e),
        }
    }

    fn bad(&mut self, on_bad: OnBad, err: Error) -> Result<()> {
        match on_bad {
            OnBad::Error => Err(err),
            OnBad::Skip => {
                self.skipped += 1;
                if self.skip_reasons.len() < 5 {
                    self.skip_reasons.push(err.to_string());
                }
                Ok(())
            }
        }
    }
}

fn row_err(path: &Path, row: usize, field: &str, reason: impl Into<String>) -> Error {
    Error::Row { path: path.into(), row, field: field.into(), reason: reason.into() }
}

/// Rows of a .json (a list), .jsonl or .parquet file as JSON objects.
pub fn read_rows(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "parquet" {
        return parquet_rows(path);
    }
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let values: Vec<Value> = if ext == "jsonl" {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).map_err(|e| file(path, format!("line {}: invalid JSON: {e}", i + 1))))
            .collect::<Result<_>>()?
    } else {
        match serde_json::from_str(&text).map_err(|e| file(path, format!("invalid JSON: {e}")))? {
            Value::Array(a) => a,
            _ => return Err(file(path, "expected a JSON list of samples (or use .jsonl)")),
        }
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(m) => Ok(m),
            _ => Err(row_err(path, i, "(row)", "expected an object")),
        })
        .collect()
}

const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "execute"];

fn messages_of(path: &Path, row: usize, v: Option<&Value>) -> Result<Vec<Message>> {
    let Some(Value::Array(list)) = v else {
        return Err(row_err(path, row, "messages", "missing or not a list"));
    };
    let mut out = vec![];
    for (j, m) in list.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        let content = m.get("content").and_then(Value::as_str);
        match (role, content) {
            (Some(r), Some(c)) if ROLES.contains(&r) => out.push(Message::new(r, c)),
            (Some(r), Some(_)) => return Err(row_err(path, row, &format!("messages[{j}].role"), format!("unknown role `{r}`"))),
            _ => return Err(row_err(path, row, &format!("messages[{j}]"), "needs string `role` and `content`")),
        }
    }
    for (j, m) in out.iter().enumerate().filter(|(_, m)| m.role == "assistant") {
        if let Some(tag) = unknown_tag(&m.content) {
            return Err(row_err(path, row, &format!("messages[{j}].content"), format!("unknown tag `{tag}` (the DeepAnalyze tags are {})", model::DEEPANALYZE_TAGS.join(" "))));
        }
    }
    if !out.iter().any(|m| m.role == "assistant") {
        return Err(row_err(path, row, "messages", "no assistant message to train on"));
    }
    Ok(out)
}

/// DeepAnalyze SFT files → SftSample shards. `ability` defaults to each file's stem.
pub fn import_sft(inputs: &[PathBuf], out: &Path, ability: Option<&str>, on_bad: OnBad) -> Result<ImportReport> {
    let mut w = ShardWriter::<SftSample>::create(out, DEFAULT_SHARD_BYTES)?;
    let mut report = ImportReport::default();
    for path in inputs {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("sft").to_string();
        for (row, r) in read_rows(path)?.into_iter().enumerate() {
            let s = |k: &str| r.get(k).and_then(Value::as_str).map(String::from);
            let sample = messages_of(path, row, r.get("messages")).map(|messages| SftSample {
                id: s("id").unwrap_or_else(|| format!("{stem}-{row}")),
                ability: ability.map(String::from).or(s("ability")).or(s("category")).unwrap_or_else(|| stem.clone()),
                source: s("source").unwrap_or_else(|| path.file_name().unwrap().to_string_lossy().into()),
                messages,
                difficulty: r.get("difficulty").and_then(Value::as_f64).map(|x| x as f32),
            });
            report.take(&mut w, sample, on_bad)?;
        }
    }
    w.finish()?;
    Ok(report)
}

/// `# Instruction\n{task}\n\n# Data\nFile 1:\n{"name": .., "size": ..}\n\nFile 2: ...`:
/// only names and sizes; the model inspects the files itself.
pub fn deepanalyze_prompt(instruction: &str, files: &[(String, u64)]) -> String {
    let mut p = format!("# Instruction\n{instruction}\n\n# Data\n");
    let entries: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, (name, bytes))| {
            let size = format!("{:.1}KB", *bytes as f64 / 1024.0);
            // Python's json.dumps spacing, as the published prompts were made.
            format!("File {}:\n{{\"name\": {}, \"size\": {}}}", i + 1, json!(name), json!(size))
        })
        .collect();
    p += &entries.join("\n\n");
    p
}

/// InfiAgent-DABench (questions.jsonl, labels.jsonl, tables/) → qa RlTask shards in `out`,
/// with the referenced tables copied to `out/_tables` (underscore: parquet readers skip it).
pub fn import_dabench(dir: &Path, out: &Path, on_bad: OnBad) -> Result<ImportReport> {
    let qpath = dir.join("questions.jsonl");
    let lpath = dir.join("labels.jsonl");
    let questions = read_rows(&qpath)?;
    let mut labels = std::collections::HashMap::new();
    for (row, l) in read_rows(&lpath)?.into_iter().enumerate() {
        let id = l.get("id").and_then(Value::as_i64).ok_or_else(|| row_err(&lpath, row, "id", "missing or not an integer"))?;
        labels.insert(id, l.get("common_answers").cloned().unwrap_or(Value::Null));
    }
    let tables_out = out.join("_tables");
    std::fs::create_dir_all(&tables_out).map_err(|e| io(&tables_out, e))?;
    let mut w = ShardWriter::<RlTask>::create(out, DEFAULT_SHARD_BYTES)?;
    let mut report = ImportReport::default();
    for (row, q) in questions.into_iter().enumerate() {
        let task = (|| {
            let s = |k: &str| q.get(k).and_then(Value::as_str).ok_or_else(|| row_err(&qpath, row, k, "missing or not a string"));
            let id = q.get("id").and_then(Value::as_i64).ok_or_else(|| row_err(&qpath, row, "id", "missing or not an integer"))?;
            let table = s("file_name")?;
            let src = dir.join("tables").join(table);
            let bytes = std::fs::metadata(&src).map_err(|_| row_err(&qpath, row, "file_name", format!("{} not found", src.display())))?.len();
            let answers = labels.get(&id).filter(|a| a.is_array()).ok_or_else(|| row_err(&lpath, row, "common_answers", format!("no label for question id {id}")))?;
            let dst = tables_out.join(table);
            if !dst.exists() {
                std::fs::copy(&src, &dst).map_err(|e| io(&src, e))?;
            }
            let instruction = format!("{}\nConstraints: {}\nAnswer format: {}", s("question")?, s("constraints")?, s("format")?);
            Ok(RlTask {
                id: format!("dabench-{id}"),
                kind: "qa".into(),
                prompt: deepanalyze_prompt(&instruction, &[(table.to_string(), bytes)]),
                workspace: "_tables".into(),
                files: vec![table.to_string()],
                ground_truth: Some(answers.to_string()),
                judge: Some(json!({"method": "dabench", "format": s("format")?}).to_string()),
                source: "dabench".into(),
                metadata: json!({"question_id": id, "question": s("question")?, "level": q.get("level"),
                                 "concepts": q.get("concepts")}).to_string(),
            })
        })();
        report.take(&mut w, task, on_bad)?;
    }
    w.finish()?;
    Ok(report)
}

/// The DeepAnalyze RL parquet → RlTask shards. Workspaces are looked up as
/// `<workspaces>/<workspace_id>/` (by default `workspaces/` beside the input).
pub fn import_rl(input: &Path, workspaces: Option<&Path>, out: &Path, on_bad: OnBad) -> Result<ImportReport> {
    let rows = parquet_rows(input)?;
    let ws_root = workspaces.map(Path::to_path_buf).unwrap_or_else(|| input.parent().unwrap_or(Path::new(".")).join("workspaces"));
    let mut w = ShardWriter::<RlTask>::create(out, DEFAULT_SHARD_BYTES)?;
    let mut report = ImportReport::default();
    for (row, r) in rows.into_iter().enumerate() {
        let task = (|| {
            let prompt = match r.get("prompt") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(msgs)) => msgs
                    .iter()
                    .rev()
                    .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                    .and_then(|m| m.get("content").and_then(Value::as_str))
                    .ok_or_else(|| row_err(input, row, "prompt", "no user message"))?
                    .to_string(),
                _ => return Err(row_err(input, row, "prompt", "missing (a string or a list of messages)")),
            };
            let spec = match r.get("reward_spec") {
                Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| row_err(input, row, "reward_spec", format!("invalid JSON: {e}")))?,
                Some(v @ Value::Object(_)) => v.clone(),
                _ => return Err(row_err(input, row, "reward_spec", "missing (an object with method, ground_truth, function)")),
            };
            let method = spec.get("method").and_then(Value::as_str).unwrap_or("");
            let data = r.get("data").and_then(Value::as_str).unwrap_or("");
            let kind = [data, method]
                .iter()
                .find_map(|s| TASK_KINDS.iter().find(|k| s.contains(*k)))
                .ok_or_else(|| row_err(input, row, "data", format!("cannot tell the task kind from data `{data}` / method `{method}` (qa, datatask, openresearch)")))?;
            let ws_id = r.get("workspace_id").and_then(|v| v.as_str().map(String::from).or_else(|| v.as_i64().map(|x| x.to_string())))
                .ok_or_else(|| row_err(input, row, "workspace_id", "missing"))?;
            let ws = ws_root.join(&ws_id);
            let mut files: Vec<String> = std::fs::read_dir(&ws).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
            files.sort();
            let gt = spec.get("ground_truth").map(|g| match g { Value::String(s) => s.clone(), other => other.to_string() });
            Ok(RlTask {
                id: r.get("id").and_then(Value::as_str).map(String::from).unwrap_or_else(|| format!("rl-{row}")),
                kind: kind.to_string(),
                prompt,
                workspace: ws.display().to_string(),
                files,
                ground_truth: gt,
                judge: Some(json!({"method": method, "function": spec.get("function")}).to_string()),
                source: input.file_name().unwrap().to_string_lossy().into(),
                metadata: json!({"data": data, "workspace_id": ws_id}).to_string(),
            })
        })();
        report.take(&mut w, task, on_bad)?;
    }
    w.finish()?;
    Ok(report)
}

/// In text that uses the DeepAnalyze tags, the first `<Word>` / `</Word>` tag (capitalised
/// letters only, outside code fences) that is not one of them: `<Analyse>`, `<Think>`.
pub fn unknown_tag(text: &str) -> Option<String> {
    if !model::DEEPANALYZE_TAGS.iter().any(|t| text.contains(t)) {
        return None;
    }
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            let name = rest.strip_prefix('/').unwrap_or(rest);
            let end = name.find('>').unwrap_or(0);
            let word = &name[..end];
            if end > 0 && word.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && word.chars().all(|c| c.is_ascii_alphabetic()) {
                let tag = format!("<{}{word}>", if rest.starts_with('/') { "/" } else { "" });
                if !model::DEEPANALYZE_TAGS.contains(&tag.as_str()) {
                    return Some(tag);
                }
            }
        }
    }
    None
}
