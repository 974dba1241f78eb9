//! Multi-turn rollouts of a model on data tasks, as the published agent runs: generate
//! until `</Code>` or the end token, run the cell in the task's sandbox workspace, append
//! `\n<Execute>\n{observation}\n</Execute>\n`, continue. Turns are batched across tasks
//! (every unfinished task generates together). Used by `trainer eval`; the RL stage's
//! engine (ids kept as generated, many in flight) grows from this.
use anyhow::{Context, Result};
use burn::prelude::Backend;
use datasets::RlTask;
use model::{generate, ChatTemplate, Qwen3, SamplingConfig, Tokenizer};
use sandbox::{extract_code, Mode, Sandbox};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub task_id: String,
    /// The assistant stream, observations included.
    pub text: String,
    pub cells: usize,
    /// Cells whose observation is an error (`[Error]`).
    pub failed_cells: usize,
    /// Ended with the end token (not by running out of turns or tokens).
    pub finished: bool,
    pub well_formed: bool,
    /// Answers graded against the task's ground truth (qa tasks); None without one.
    pub correct: Option<bool>,
}

pub struct RolloutConfig {
    pub max_turns: usize,
    pub max_new_tokens: usize,
    pub sampling: SamplingConfig,
}

/// `<Analyze>` first, `<Answer>..</Answer>` last, each `<Code>` holding a ```python block,
/// every tag closed (observations excluded).
pub fn well_formed(text: &str) -> bool {
    let mut own = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("<Execute>") {
        own.push_str(&rest[..i]);
        rest = rest[i..].find("</Execute>").map_or("", |j| &rest[i + j + "</Execute>".len()..]);
    }
    own.push_str(rest);
    let t = own.trim();
    let balanced = ["Analyze", "Understand", "Code", "Answer"]
        .iter()
        .all(|tag| t.matches(&format!("<{tag}>")).count() == t.matches(&format!("</{tag}>")).count());
    let fenced = t.split("<Code>").skip(1).all(|c| c.split("</Code>").next().is_some_and(|c| c.contains("```python")));
    t.starts_with("<Analyze>") && t.ends_with("</Answer>") && balanced && fenced
}

pub fn run<B: Backend>(
    model: &Qwen3<B>,
    tok: &Tokenizer,
    template: &ChatTemplate,
    eos: &[u32],
    sandbox: &Sandbox,
    tasks: &[RlTask],
    shard_dir: &Path,
    cfg: &RolloutConfig,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Rollout>> {
    let mut ids = vec![];
    let mut workspaces = vec![];
    for t in tasks {
        let prompt = template.render(&[serde_json::json!({"role": "user", "content": t.prompt})], None, true)?;
        ids.push(tok.encode(&prompt)?);
        let base = shard_dir.join(&t.workspace);
        let files: Vec<_> = t.files.iter().map(|f| base.join(f)).collect();
        let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
        workspaces.push(sandbox.workspace_with_files(&refs).with_context(|| format!("task {}: workspace {}", t.id, base.display()))?);
    }
    let mut out: Vec<Rollout> = tasks
        .iter()
        .map(|t| Rollout { task_id: t.id.clone(), text: String::new(), cells: 0, failed_cells: 0, finished: false, well_formed: false, correct: None })
        .collect();
    let mut active: Vec<usize> = (0..tasks.len()).collect();
    let sampling = SamplingConfig {
        max_new_tokens: cfg.max_new_tokens,
        stop_strings: vec!["</Code>".into()],
        stop_token_ids: eos.to_vec(),
        ..cfg.sampling.clone()
    };
    for _turn in 0..cfg.max_turns {
        if active.is_empty() {
            break;
        }
        let prompts: Vec<Vec<u32>> = active.iter().map(|&i| ids[i].clone()).collect();
        let gens = generate(model, Some(tok), &prompts, &sampling);
        let mut still = vec![];
        for (&i, g) in active.iter().zip(gens) {
            let piece = tok.decode(&g.tokens)?;
            ids[i].extend(&g.tokens);
            let r = &mut out[i];
            match g.finish {
                model::Finish::StopString(_) => {
                    r.text.push_str(&piece);
                    // No fenced block: the published environment's "no code" error.
                    let obs = match extract_code(&piece) {
                        Some(code) => sandbox.run(&workspaces[i], &code, Mode::Stateless).observation,
                        None => sandbox::NO_CODE_OBSERVATION.to_string(),
                    };
                    r.cells += 1;
                    r.failed_cells += usize::from(obs.starts_with("[Error]"));
                    let block = format!("\n<Execute>\n{obs}\n</Execute>\n");
                    ids[i].extend(tok.encode(&block)?);
                    r.text.push_str(&block);
                    still.push(i);
                }
                model::Finish::StopToken(_) => {
                    r.text.push_str(tok.decode(&g.tokens[..g.tokens.len() - 1])?.as_str());
                    r.finished = true;
                    progress(1);
                }
                model::Finish::Length => {
                    r.text.push_str(&piece);
                    progress(1);
                }
            }
        }
        active = still;
    }
    progress(active.len());
    for (r, t) in out.iter_mut().zip(tasks) {
        r.well_formed = r.finished && well_formed(&r.text);
        let labels: Option<Vec<(String, String)>> = t.ground_truth.as_deref().and_then(|g| serde_json::from_str(g).ok());
        r.correct = labels.filter(|_| t.kind == "qa").map(|l| synth::grade::correct(&r.text, &l));
    }
    Ok(out)
}
