//! `trainer generate`: sample a continuation from a checkpoint. `--prompt` is raw text
//! (encoded as given); `--messages` is a chat rendered with the checkpoint's template.
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use model::{generate_with, Checkpoint, DefaultBackend as B, Finish, SamplingConfig};
use serde_json::Value;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder (Hugging Face layout).
    #[arg(long)]
    model: PathBuf,
    /// Raw prompt text, encoded exactly as given (no chat template).
    #[arg(long, conflicts_with = "messages", required_unless_present = "messages")]
    prompt: Option<String>,
    /// JSON file: a list of chat messages, or {"messages": [...], "tools": [...]};
    /// rendered with the checkpoint's chat template and a generation prompt.
    #[arg(long)]
    messages: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop once the output contains this string (repeatable), e.g. `</Code>`.
    #[arg(long)]
    stop: Vec<String>,
    /// Print {"prompt_ids", "ids", "logprobs", "text", "finish_reason"} instead of the text;
    /// `logprobs` are of softmax(logits / temperature) before top-k/top-p (at temperature 1
    /// or greedy, what `score` gives).
    #[arg(long)]
    json: bool,
    /// f32, or bf16 (bf16 matrices and compute, as `[compute] precision = "bf16"`; for GPUs).
    #[arg(long, default_value = "f32")]
    precision: model::Precision,
}

fn read_messages(path: &PathBuf) -> Result<(Vec<Value>, Option<Value>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let (messages, tools) = match v {
        Value::Array(m) => (m, None),
        Value::Object(mut o) => match o.remove("messages") {
            Some(Value::Array(m)) => (m, o.remove("tools")),
            _ => bail!("{}: field `messages`: expected a list of messages", path.display()),
        },
        _ => bail!("{}: expected a list of messages or an object with `messages`", path.display()),
    };
    for (i, m) in messages.iter().enumerate() {
        if !m.get("role").is_some_and(Value::is_string) || !m.get("content").is_some_and(Value::is_string) {
            bail!("{}: messages[{i}]: needs string `role` and `content`", path.display());
        }
    }
    if messages.is_empty() {
        bail!("{}: `messages` is empty", path.display());
    }
    Ok((messages, tools))
}

pub fn run(args: Args) -> Result<()> {
    if !(0.0..=1.0).contains(&args.top_p) || args.top_p == 0.0 {
        bail!("--top-p must be in (0, 1], got {}", args.top_p);
    }
    if args.temperature < 0.0 {
        bail!("--temperature must be >= 0, got {}", args.temperature);
    }
    let mut ck = Checkpoint::<B>::load(&args.model, &Default::default())?;
    ck.model = ck.model.for_generation(args.precision);
    let tok = ck.tokenizer()?;
    let prompt = match (&args.prompt, &args.messages) {
        (Some(p), _) => p.clone(),
        (None, Some(path)) => {
            let (messages, tools) = read_messages(path)?;
            ck.chat_template()?.render(&messages, tools.as_ref(), true)?
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let prompt_ids = tok.encode(&prompt)?;
    if prompt_ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let cfg = SamplingConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        stop_token_ids: ck.eos_token_ids(),
        stop_strings: args.stop.clone(),
        ..Default::default()
    };
    let bar = ProgressBar::new(args.max_new_tokens as u64).with_style(
        ProgressStyle::with_template("{spinner} generating {pos}/{len} tokens {per_sec}").unwrap(),
    );
    let g = generate_with(&ck.model, Some(tok), &[prompt_ids.clone()], &cfg, None, |s| bar.set_position(s as u64), |_, _| {})
        .remove(0);
    bar.finish_and_clear();
    let text = tok.decode(&g.tokens)?;
    if args.json {
        let finish = match &g.finish {
            Finish::StopToken(t) => serde_json::json!({"stop_token": t}),
            Finish::StopString(s) => serde_json::json!({"stop_string": s}),
            Finish::Length => serde_json::json!("length"),
        };
        let out = serde_json::json!({"prompt_ids": prompt_ids, "ids": g.tokens, "logprobs": g.logprobs,
                                     "text": text, "finish_reason": finish});
        println!("{out}");
    } else {
        println!("{text}");
    }
    Ok(())
}
