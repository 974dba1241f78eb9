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

/// Runs the loop; Err with a one-line reason when the endpoint fails.
pub fn teach(prompt: &str, cfg: &TeacherConfig, sandbox: &Sandbox, ws: &Workspace) -> Result<Solved, String> {
    let url = format!("{}/chat/completions", cfg.base_url.trim_end_matches('/'));
    let mut messages = vec![json!({"role": "system", "content": SYSTEM}), json!({"role": "user", "content": prompt})];
    let mut out = Solved { response: String::new(), cells: vec![], recovered_error: false, sandbox_secs: 0.0 };
    let mut saw_error = false;
    for _ in 0..cfg.max_turns {
        let body = json!({"model": cfg.model, "messages": messages, "temperature": cfg.temperature,
                          "max_tokens": cfg.max_tokens, "stop": ["</Code>"]});
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
        let mut content = reply["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| format!("{url}: reply has no choices[0].message.content"))?
            .to_string();
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
