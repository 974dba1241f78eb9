//! The teacher Solver: an OpenAI-compatible chat endpoint drives the same multi-turn loop
//! as a rollout. It writes until `</Code>` (a stop sequence); the code runs in the
//! sandbox; the observation goes back as `<Execute>`; until `<Answer>`. The trajectory it
//! leaves is then inspected like the expert's.
use crate::solver::Solved;
use sandbox::{Mode, Sandbox, Workspace, NO_CODE_OBSERVATION};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct TeacherConfig {
    /// e.g. `https://api.openai.com/v1` or a local vLLM server; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub temperature: f32,
    pub max_tokens: usize,
    pub max_turns: usize,
}

pub const SYSTEM: &str = "You are a data scientist working on the files of the current folder. Work in steps, \
each wrapped in one tag: <Analyze> to plan and reason, <Understand> to interpret data and results, \
<Code> holding one ```python fenced block that will be run (each block runs on its own: load the data again), \
then stop; the output comes back inside <Execute>. Finish with <Answer> in the format the task asks for.";

fn chat(cfg: &TeacherConfig, messages: &[Value], stop: Option<&str>) -> Result<String, String> {
    let url = format!("{}/chat/completions", cfg.base_url.trim_end_matches('/'));
    let mut body = json!({"model": cfg.model, "messages": messages, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens});
    if let Some(stop) = stop {
        body["stop"] = json!([stop]);
    }
    let mut req = ureq::post(&url).header("Content-Type", "application/json");
    if let Some(key) = &cfg.api_key {
        req = req.header("Authorization", &format!("Bearer {key}"));
    }
    let reply: Value = req
        .send_json(&body)
        .map_err(|e| format!("{url}: {e}"))?
        .body_mut()
        .read_json()
        .map_err(|e| format!("{url}: unreadable reply: {e}"))?;
    reply["choices"][0]["message"]["content"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| format!("{url}: reply has no choices[0].message.content"))
}

pub const PARAPHRASE: &str = "Rephrase the data-analysis task the user sends, as a different analyst would ask it. \
Keep every `backticked` name, every number and every file name exactly as written, and keep what is asked. \
Reply with the rephrased task only.";

/// Everything a paraphrase must keep: `backticked` names, numbers and file names.
pub fn protected(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text.split('`').skip(1).step_by(2).map(|s| format!("`{s}`")).collect();
    for word in text.split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')' || c == '?') {
        let w = word.trim_end_matches(['.', ':', ';']);
        let numeric = !w.is_empty() && w.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-') && w.chars().any(|c| c.is_ascii_digit());
        let file = w.contains('.') && w.rsplit('.').next().is_some_and(|e| ["csv", "tsv", "xlsx", "json", "parquet", "sqlite", "db", "md", "png"].contains(&e));
        if (numeric || file) && !w.starts_with('`') {
            out.push(w.to_string());
        }
    }
    out
}

/// The task statement rephrased by the endpoint, or None when the paraphrase lost a
/// protected name, number or file (the template's wording is kept then).
pub fn paraphrase(statement: &str, cfg: &TeacherConfig) -> Result<Option<String>, String> {
    let text = chat(cfg, &[json!({"role": "system", "content": PARAPHRASE}), json!({"role": "user", "content": statement})], None)?;
    let text = text.trim().to_string();
    Ok((!text.is_empty() && protected(statement).iter().all(|p| text.contains(p.as_str()))).then_some(text))
}

/// Runs the loop; Err with a one-line reason when the endpoint fails.
pub fn teach(prompt: &str, cfg: &TeacherConfig, sandbox: &Sandbox, ws: &Workspace) -> Result<Solved, String> {
    let mut messages = vec![json!({"role": "system", "content": SYSTEM}), json!({"role": "user", "content": prompt})];
    let mut out = Solved { response: String::new(), cells: vec![], recovered_error: false, sandbox_secs: 0.0 };
    let mut saw_error = false;
    for _ in 0..cfg.max_turns {
        let mut content = chat(cfg, &messages, Some("</Code>"))?;
        // The stop sequence is not returned: close an open <Code> block ourselves.
        if content.matches("<Code>").count() > content.matches("</Code>").count() {
            content += "</Code>";
        }
        out.response += &content;
        messages.push(json!({"role": "assistant", "content": content}));
        if content.contains("</Answer>") {
            break;
        }
        let Some(block) = content.rsplit("<Code>").next().filter(|_| content.contains("<Code>")) else {
            return Err("the teacher stopped without <Code> or <Answer>".into());
        };
        let (code, obs) = match sandbox::extract_code(&format!("<Code>{block}")) {
            Some(code) => {
                let ex = sandbox.run(ws, &code, Mode::Stateless);
                out.sandbox_secs += ex.wall_ms / 1000.0;
                (code, ex.observation)
            }
            None => (String::new(), NO_CODE_OBSERVATION.to_string()),
        };
        if saw_error && !obs.starts_with("[Error]") {
            out.recovered_error = true;
        }
        saw_error |= obs.starts_with("[Error]");
        let piece = format!("\n<Execute>\n{obs}\n</Execute>\n");
        out.response += &piece;
        out.cells.push((code, obs));
        messages.push(json!({"role": "user", "content": piece.trim()}));
    }
    Ok(out)
}
