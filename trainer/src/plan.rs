//! `trainer plan CONFIG.toml`: what a run will take before it starts. For each stage (one
//! stage config, or every stage of a curriculum, each following the model its previous
//! stage writes): the model and its parameters, the steps (the training data tokenized as
//! the run will), one device's memory by part, the FLOPs of a step, and one step timed on
//! this machine (random weights of the same shape, the data's first documents) for the time.
use anyhow::{Context, Result};
use curriculum::{Plan, StageKind};
use model::{ChatTemplate, Compute, Qwen3Config, Tokenizer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use trainer::estimate::{self, Memory};
use trainer::rl_config::RlConfig;
use trainer::rollout::wave_tasks;
use trainer::sft;
use trainer::stage_config::StageConfig;

#[derive(clap::Args)]
pub struct Args {
    /// A stage config (SFT or RL) or a curriculum (`[[stage]]` entries).
    config: PathBuf,
    /// Override a config value: key=value (repeatable; every stage of a curriculum).
    #[arg(long = "set")]
    set: Vec<String>,
    /// Devices to plan for (sets `compute.devices`; default: the config's).
    #[arg(long)]
    gpus: Option<usize>,
    /// Machines, each with those devices (`trainer submit --nodes`).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Do not time a step on this machine (memory and FLOPs only).
    #[arg(long)]
    no_measure: bool,
    /// One JSON object on stdout instead of the text.
    #[arg(long)]
    json: bool,
}

/// The model a stage trains: its shape, and its tokenizer when one exists (to count the
/// data's tokens as the run will).
struct Resolved {
    source: String,
    config: Qwen3Config,
    tokenizer: Option<(Tokenizer, ChatTemplate)>,
}

pub fn run(mut a: Args) -> Result<()> {
    if let Some(g) = a.gpus {
        a.set.push(format!("compute.devices={g}"));
    }
    if a.nodes == 0 {
        anyhow::bail!("--nodes 0: at least one machine");
    }
    let detail = if a.no_measure { Detail::Steps } else { Detail::Timed };
    let plans = stages(&a.config, &a.set, detail, a.nodes, |i, n, p| {
        if !a.json {
            print_stage(i, n, p)
        }
    })?;
    if a.json {
        println!("{}", json!({ "stages": plans }));
    }
    Ok(())
}

/// How much a plan works out: the model and memory only (reads no data); plus the steps
/// (tokenizes the data, may train the BPE tokenizer); plus a step timed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    Memory,
    Steps,
    Timed,
}

/// What `trainer --stage` would run for CONFIG: every stage of a curriculum, else the one
/// stage (RL when it has `[rollout]`).
pub fn kinds(config: &Path) -> Result<Vec<(StageKind, PathBuf, bool)>> {
    let text = std::fs::read_to_string(config).with_context(|| config.display().to_string())?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    Ok(if doc.contains_key("stage") {
        Plan::load(config, &[])?.stages.into_iter().enumerate().map(|(i, s)| (s.kind, s.config, i > 0 && s.from_previous)).collect()
    } else if doc.contains_key("rollout") {
        vec![(StageKind::Rl, config.to_path_buf(), false)]
    } else {
        vec![(StageKind::SftSingle, config.to_path_buf(), false)] // (the SFT loop is the same for both)
    })
}

/// The plan of every stage of `config` on `nodes` machines (as JSON), each passed to
/// `each` as it is made.
pub fn stages(config: &Path, set: &[String], detail: Detail, nodes: usize, mut each: impl FnMut(usize, usize, &Value)) -> Result<Vec<Value>> {
    let stages = kinds(config)?;
    let n = stages.len();
    let mut previous: Option<Resolved> = None;
    let mut out = vec![];
    for (i, (kind, path, follow)) in stages.into_iter().enumerate() {
        let prev = if follow {
            previous.take().map(|r| Resolved { source: "the previous stage's final model".into(), ..r })
        } else {
            None
        };
        let (plan, resolved) = match kind {
            StageKind::Rl => plan_rl(&path, set, detail, nodes, prev)?,
            _ => plan_sft(if n == 1 { "sft" } else { kind.name() }, &path, set, detail, nodes, prev)?,
        };
        each(i, n, &plan);
        out.push(plan);
        previous = Some(resolved);
    }
    Ok(out)
}

fn plan_sft(kind: &str, path: &Path, set: &[String], detail: Detail, nodes: usize, prev: Option<Resolved>) -> Result<(Value, Resolved)> {
    let cfg = StageConfig::load(path, set)?;
    let split = (detail != Detail::Memory).then(|| cfg.data.load());
    let r = match prev {
        Some(r) => r,
        None => resolve_sft(&cfg, path, split.as_ref().and_then(|s| s.as_ref().ok()))?,
    };
    let b = &cfg.batch;
    let forwards = b.batch_tokens.div_ceil(b.seq_len).div_ceil(b.micro_batch);
    // The data tokenized as the run will: the step count, and a real first step to time.
    let (steps, steps_from, first_step) = match (&split, &r.tokenizer) {
        (Some(Ok(split)), Some((tok, template))) => {
            let overlong = if b.overlong == "drop" { datasets::Overlong::Drop } else { datasets::Overlong::Truncate };
            let bar = sft::spinner(&format!("plan: tokenizing {}", path.display()));
            let sources = split.train.iter().map(|(_, _, s)| sft::tokenize_all(s, tok, template, b.seq_len, overlong).map(|(t, _)| t)).collect::<Result<Vec<_>>>()?;
            bar.finish_and_clear();
            let train_tokens: usize = sources.iter().flatten().map(|t| t.len()).sum();
            (Some(sft::total_steps(&cfg, train_tokens)), format!("{train_tokens} training tokens"), Some(first_batch(&sources, &cfg)))
        }
        (Some(Err(e)), _) if cfg.train.max_steps.is_none() => (None, format!("unknown until the data exists: {e}"), None),
        (None, _) if cfg.train.max_steps.is_none() => (None, "not counted".to_string(), None),
        _ => (cfg.train.max_steps, "train.max_steps".to_string(), None),
    };
    let (batch, batch_is) = match first_step {
        Some(mbs) => (mbs, "the data's first documents, packed"),
        None => (vec![estimate::random_rows(r.config.vocab_size, b.micro_batch, b.seq_len, b.seq_len); forwards], "random full sequences"),
    };
    let n = cfg.compute.devices;
    // (Every machine shards its state among its own devices, so a device's memory does not
    // depend on the machine count.)
    let memory = estimate::training(&r.config, cfg.compute.model(), b.micro_batch, b.seq_len, n);
    let flops = estimate::train_flops_per_token(&r.config, b.seq_len, cfg.compute.gradient_checkpointing) * (b.micro_batch * b.seq_len * forwards) as f64;
    // The first machine's share of the forwards (global device g takes forwards g, g + G, ...).
    let batch: Vec<_> = batch.into_iter().enumerate().filter(|(i, _)| i % (n * nodes) < n).map(|(_, mb)| mb).collect();
    let timing = time(detail, &r.config, cfg.compute.model(), &batch, n, &memory);
    let step_s = timing.as_ref().ok().map(|t| t.step_s);
    let plan = json!({
        "kind": kind, "config": path, "out": cfg.out, "model": model_json(&r), "compute": cfg.compute.to_string(), "devices": n,
        "nodes": nodes, "exchanged_bytes_per_step": exchanged(&r.config, nodes),
        "forward": {"rows": b.micro_batch, "seq_len": b.seq_len}, "forwards_per_step": forwards, "forwards_per_device": forwards.div_ceil(n * nodes), "batch_tokens": b.batch_tokens,
        "steps": steps, "steps_from": steps_from, "memory": memory_json(&memory), "flops_per_step": flops,
        "measured": timing_json(&timing, batch_is), "step_s": step_s, "total_s": step_s.zip(steps).map(|(s, n)| s * n as f64),
    });
    Ok((plan, r))
}

/// A first step's documents (taken from the sources in turn until `batch_tokens`), packed
/// and cut into micro-batches as the SFT loop does.
fn first_batch(sources: &[Vec<datasets::Tokenized>], cfg: &StageConfig) -> Vec<Vec<datasets::PackedSeq>> {
    let (mut docs, mut total) = (vec![], 0);
    'fill: for i in 0.. {
        let mut any = false;
        for s in sources.iter().filter_map(|s| s.get(i)) {
            any = true;
            if !docs.is_empty() && total + s.len() > cfg.batch.batch_tokens {
                break 'fill;
            }
            total += s.len();
            docs.push(s.clone());
        }
        if !any {
            break;
        }
    }
    let pack = datasets::PackConfig { seq_len: cfg.batch.seq_len, overlong: datasets::Overlong::Truncate, pad_id: 0 };
    datasets::pack(&docs, &pack).0.chunks(cfg.batch.micro_batch).map(<[_]>::to_vec).collect()
}

/// What a machine sends (and as much it receives) per optimizer step across `nodes`
/// machines: its partial gradient sums for the parameters other machines own, and its own
/// parameters' totals to every other machine, f32 (`parallel::reduce_across`); none on one.
fn exchanged(c: &Qwen3Config, nodes: usize) -> Option<f64> {
    (nodes > 1).then(|| 2.0 * 4.0 * estimate::params(c).total as f64 * (nodes - 1) as f64 / nodes as f64)
}

fn plan_rl(path: &Path, set: &[String], detail: Detail, nodes: usize, prev: Option<Resolved>) -> Result<(Value, Resolved)> {
    let cfg = RlConfig::load(path, set)?;
    let r = match prev {
        Some(r) => r,
        None => {
            let dir = &cfg.model.init;
            from_dir(dir, dir.display().to_string(), false).map_err(|e| anyhow::anyhow!("{}: model.init: {e}", path.display()))?
        }
    };
    let ro = &cfg.rollout;
    let rows = ro.tasks_per_step * ro.group_size;
    let g = &cfg.grpo;
    // Prompt lengths of the training tasks, rendered and encoded as the rollouts do.
    let tasks = (detail != Detail::Memory).then(|| trainer::rl::load_tasks(&cfg));
    let prompts = match (tasks, &r.tokenizer) {
        (None, _) => json!({"unknown": "not read"}),
        (Some(Ok((train, _))), Some((tok, template))) => {
            let bar = sft::spinner(&format!("plan: encoding the prompts of {}", path.display()));
            let mut lens = vec![];
            for (t, _) in &train {
                lens.push(trainer::rollout::prompt_ids(tok, template, t)?.len());
            }
            bar.finish_and_clear();
            // As the run does: prompts over rollout.max_prompt_tokens are left out.
            let all = lens.len();
            lens.retain(|&l| ro.max_prompt_tokens.is_none_or(|m| l <= m));
            json!({"tasks": lens.len(), "left_out": all - lens.len(), "max": lens.iter().max(), "mean": lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64})
        }
        (Some(Err(e)), _) => json!({"unknown": causes(&e)}),
        (_, None) => json!({"unknown": "no tokenizer"}),
    };
    // Unknown prompts (no data yet): the longest a task may have, if the config bounds it.
    let max_prompt = prompts["max"].as_u64().map(|m| m as usize).or(ro.max_prompt_tokens).unwrap_or(0);
    let mean_prompt = prompts["mean"].as_f64().unwrap_or(0.0) as usize;
    let n = cfg.compute.devices;
    // Each device decodes its share of the step's tasks (rollout::run_on_devices), in waves
    // of at most max_rows.
    let rows_per_device = wave_tasks(ro.max_rows, ro.group_size, ro.tasks_per_step.div_ceil(n * nodes)) * ro.group_size;
    let memory = estimate::rl(&r.config, cfg.compute.model(), g.micro_batch_tokens, rows_per_device, max_prompt + ro.max_response_tokens, g.kl_coef != 0.0, n);
    // At most: every rollout at max_response_tokens after a mean prompt (context for the
    // update's forward), update_epochs times, packed into micro-batches of micro_batch_tokens.
    let row = mean_prompt + ro.max_response_tokens;
    let tokens = rows * row * g.update_epochs;
    let flops = estimate::train_flops_per_token(&r.config, row, cfg.compute.gradient_checkpointing) * tokens as f64;
    let micro = vec![estimate::random_rows(r.config.vocab_size, 1, g.micro_batch_tokens.max(row), row)];
    let timing = time(detail, &r.config, cfg.compute.model(), &micro, 1, &memory);
    let forwards = tokens.div_ceil(g.micro_batch_tokens.max(row));
    let rollout = rollout_estimate(&cfg, &r.config, r.tokenizer.as_ref().map(|(t, _)| t), mean_prompt, nodes, timing.as_ref().err());
    let plan = json!({
        "kind": "rl", "config": path, "out": cfg.out, "model": model_json(&r), "compute": cfg.compute.to_string(), "devices": n,
        "nodes": nodes, "exchanged_bytes_per_update": exchanged(&r.config, nodes),
        "rollouts_per_step": rows, "max_response_tokens": ro.max_response_tokens, "prompt_tokens": prompts, "steps": cfg.train.steps,
        "memory": memory_json(&memory), "update_flops_per_step_at_most": flops, "update_forwards_at_most": forwards,
        "measured": timing_json(&timing, "one micro-batch of random trajectories"),
        "update_s_at_most": timing.as_ref().ok().map(|t| t.step_s * forwards.div_ceil(n * nodes) as f64),
        "rollout": rollout,
    });
    Ok((plan, r))
}

/// An upper bound on a step's rollout time: every row decodes until its response is full
/// (`max_turns` turns of `max_new_tokens`, at most `max_response_tokens`), and encodes one
/// full-length context (rollouts keep each row's cache between turns: the first turn
/// encodes the prompt, each later one only its observations, which together are at most
/// one full context's work), at the rates measured here on a random model of the shape at
/// the longest context (a mean prompt and a full response; decoding slows as the cache
/// grows), sampling as the config says; cells not included. A device decodes its
/// share of the tasks' rows (a CPU build times its machine's share: its replicas share the
/// cores). `not_timed`: why the update was not timed (then neither is this).
fn rollout_estimate(cfg: &RlConfig, c: &Qwen3Config, tok: Option<&Tokenizer>, mean_prompt: usize, nodes: usize, not_timed: Option<&String>) -> Value {
    let ro = &cfg.rollout;
    let share = ro.tasks_per_step.div_ceil(if model::ON_GPU { cfg.compute.devices * nodes } else { nodes });
    let per = wave_tasks(ro.max_rows, ro.group_size, share);
    let (rows, waves) = (per * ro.group_size, share.div_ceil(per));
    let decode_steps = (ro.max_turns * ro.max_new_tokens).min(ro.max_response_tokens);
    if let Some(why) = not_timed.map(String::as_str).or((mean_prompt == 0).then_some("prompt lengths unknown")) {
        return json!({"rows": rows, "waves": waves, "decode_steps_at_most": decode_steps, "skipped": why});
    }
    const STEPS: usize = 16;
    let context = (mean_prompt + ro.max_response_tokens).saturating_sub(STEPS).max(1);
    // Encoding the contexts is most of it: on a CPU, only when that is seconds, not hours.
    let prefill_flops = 2.0 * estimate::params(c).matmul as f64 * (rows * context) as f64;
    if !model::ON_GPU && prefill_flops > 2e12 {
        return json!({"rows": rows, "decode_steps_at_most": decode_steps, "skipped": format!("encoding {rows} contexts of {context} tokens is {:.0} TFLOP, too much for this CPU", prefill_flops / 1e12)});
    }
    let sampling = model::SamplingConfig {
        temperature: ro.temperature,
        top_p: ro.top_p,
        top_k: ro.top_k,
        stop_strings: if tok.is_some() { vec!["</Code>".into()] } else { vec![] },
        ..Default::default()
    };
    let bar = sft::spinner(&format!("plan: timing decoding ({rows} rows after {context}-token contexts) on this machine"));
    let t = estimate::time_decode(c, cfg.compute.model(), rows, context, STEPS, &sampling, tok);
    bar.finish_and_clear();
    match t {
        Ok(t) => json!({"rows": rows, "waves": waves, "decode_steps_at_most": decode_steps, "context": context, "prefill_s": t.prefill_s, "token_s": t.token_s,
                        "s_at_most": waves as f64 * (t.prefill_s + decode_steps as f64 * t.token_s)}),
        Err(e) => json!({"rows": rows, "waves": waves, "decode_steps_at_most": decode_steps, "skipped": e.to_string()}),
    }
}

/// A Hugging Face folder's model: its shape, and its tokenizer (with the DeepAnalyze tags
/// added when `add_tags`) when it has one; a folder with only `config.json` (a shape, as
/// configs/deepanalyze-8b/shape) plans memory and time, not the data's steps.
fn from_dir(dir: &Path, source: String, add_tags: bool) -> std::result::Result<Resolved, model::Error> {
    let mut config = Qwen3Config::from_dir(dir)?;
    if !dir.join("tokenizer.json").exists() {
        return Ok(Resolved { source: format!("{source} (config.json only: no tokenizer to read the data with)"), config, tokenizer: None });
    }
    let mut tok = Tokenizer::from_dir(dir)?;
    if add_tags {
        tok.add_deepanalyze_tags();
    }
    config.vocab_size = config.vocab_size.max(tok.len());
    let template = ChatTemplate::from_dir(dir, &tok.config)?;
    Ok(Resolved { source, config, tokenizer: Some((tok, template)) })
}

/// The model a stage config names when no earlier stage gives it.
fn resolve_sft(cfg: &StageConfig, path: &Path, split: Option<&curriculum::Split>) -> Result<Resolved> {
    let m = &cfg.model;
    let field = |f: &str, e: model::Error| anyhow::anyhow!("{}: {f}: {e}", path.display());
    if let Some(dir) = &m.init {
        return from_dir(dir, dir.display().to_string(), m.add_tags).map_err(|e| field("model.init", e));
    }
    let arch = m.arch.as_ref().expect("validated: init or arch");
    let own_init = cfg.out.join("init");
    if own_init.join("config.json").exists() {
        return from_dir(&own_init, format!("{} (made by an earlier run from {})", own_init.display(), arch.display()), m.add_tags).map_err(|e| field("model.init", e));
    }
    let mut config = Qwen3Config::from_file(arch).map_err(|e| field("model.arch", e))?;
    let (tokenizer, how) = match (&m.tokenizer, split) {
        (Some(dir), _) => {
            let mut t = Tokenizer::from_dir(dir).map_err(|e| field("model.tokenizer", e))?;
            if m.add_tags {
                t.add_deepanalyze_tags();
            }
            let template = ChatTemplate::from_dir(dir, &t.config).map_err(|e| field("model.tokenizer", e))?;
            (Some((t, template)), format!("tokenizer {}", dir.display()))
        }
        (None, Some(split)) => {
            let t = sft::train_tokenizer(cfg, split)?;
            (Some((t, ChatTemplate::deepanalyze())), "BPE tokenizer trained on the corpus, as the run will".into())
        }
        (None, None) => (None, format!("tokenizer to be trained (vocabulary ≤ {})", m.tokenizer_vocab)),
    };
    config.vocab_size = tokenizer.as_ref().map_or(m.tokenizer_vocab, |(t, _)| t.len());
    Ok(Resolved { source: format!("from scratch: {}, {how}", arch.display()), config, tokenizer })
}

/// Times a step, unless told not to or it cannot fit in this machine's memory. With data
/// parallel on `devices`: on GPUs the first device's share of the micro-batches (it also
/// takes the optimizer step); on a CPU build the whole step on that many replicas, which
/// share the cores.
fn time(detail: Detail, c: &Qwen3Config, compute: Compute, batch: &[Vec<datasets::PackedSeq>], devices: usize, memory: &Memory) -> std::result::Result<estimate::StepTiming, String> {
    if detail != Detail::Timed {
        return Err("--no-measure".into());
    }
    if !model::ON_GPU {
        // On a CPU build every replica lives in this machine's memory.
        let (needed, available) = (memory.peak() * devices as f64, mem_available());
        if needed > 0.9 * available {
            return Err(format!("needs about {} and this machine has {} available", gib(needed), gib(available)));
        }
    }
    let (batch, replicas): (Vec<_>, _) = if model::ON_GPU {
        (batch.iter().step_by(devices).cloned().collect(), 1)
    } else {
        (batch.to_vec(), devices)
    };
    let tokens: usize = batch.iter().flatten().map(|s| s.ids.len()).sum();
    let bar = trainer::sft::spinner(&format!("plan: timing a step ({} forward(s), {tokens} tokens) on this machine", batch.len()));
    let timing = model::devices(replicas).map_err(|e| e.to_string()).and_then(|d| estimate::time_step(c, compute, &batch, 1, &d, |_, _| ()).map_err(|e| e.to_string()));
    bar.finish_and_clear();
    timing
}

/// An error and its causes, a cause left out when the message before already ends with it.
fn causes(e: &anyhow::Error) -> String {
    let mut out: Vec<String> = vec![];
    for c in e.chain().map(|c| c.to_string()) {
        if !out.last().is_some_and(|last| last.ends_with(&c)) {
            out.push(c);
        }
    }
    out.join(": ")
}

fn mem_available() -> f64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).map_or(f64::INFINITY, |kb| kb * 1024.0)
}

fn model_json(r: &Resolved) -> Value {
    let c = &r.config;
    json!({"source": r.source, "layers": c.num_hidden_layers, "hidden": c.hidden_size, "heads": c.num_attention_heads,
           "kv_heads": c.num_key_value_heads, "head_dim": c.head_dim, "intermediate": c.intermediate_size,
           "vocab": c.vocab_size, "tied": c.tie_word_embeddings, "params": estimate::params(c)})
}

fn memory_json(m: &Memory) -> Value {
    json!({"peak_bytes": m.peak(), "total_bytes": m.total(), "parts": m.parts.iter().map(|(k, v, phase)| json!({"part": k, "bytes": v, "phase": phase})).collect::<Vec<_>>()})
}

fn timing_json(t: &std::result::Result<estimate::StepTiming, String>, batch: &str) -> Value {
    match t {
        Ok(t) => json!({"step_s": t.step_s, "warmup_s": t.warmup_s, "batch": batch,
                        "device": if model::ON_GPU { "cuda" } else { "cpu" }, "peak_rss_bytes": estimate::peak_rss()}),
        Err(why) => json!({"skipped": why}),
    }
}

fn gib(b: f64) -> String {
    if b >= (1u64 << 30) as f64 { format!("{:.2} GiB", b / (1u64 << 30) as f64) } else { format!("{:.1} MiB", b / (1u64 << 20) as f64) }
}

fn count(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2}B", n / 1e9),
        n if n >= 1e6 => format!("{:.2}M", n / 1e6),
        n if n >= 1e3 => format!("{:.1}K", n / 1e3),
        n => format!("{n}"),
    }
}

fn duration(s: f64) -> String {
    match s {
        s if s >= 3600.0 => format!("{:.1} h", s / 3600.0),
        s if s >= 60.0 => format!("{:.1} min", s / 60.0),
        s if s < 0.1 => format!("{:.1} ms", s * 1e3),
        s => format!("{s:.2} s"),
    }
}

fn waves(ro: &Value) -> String {
    match ro["waves"].as_u64() {
        Some(w) if w > 1 => format!(" (a wave; {w} waves: rollout.max_rows)"),
        _ => String::new(),
    }
}

fn print_stage(i: usize, n: usize, p: &Value) {
    let m = &p["model"];
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!("stage {}/{n}: {} ({})", i + 1, p["kind"].as_str().unwrap_or(""), p["config"].as_str().unwrap_or(""));
    println!("  model    {}", m["source"].as_str().unwrap_or(""));
    println!("           {} layers, hidden {}, {}/{} heads x {}, MLP {}, vocabulary {}{}: {} parameters ({} in the embedding)",
             m["layers"], m["hidden"], m["heads"], m["kv_heads"], m["head_dim"], m["intermediate"], m["vocab"],
             if m["tied"].as_bool() == Some(true) { ", tied" } else { "" }, count(f(&m["params"]["total"])), count(f(&m["params"]["embedding"])));
    println!("  compute  {}", p["compute"].as_str().unwrap_or(""));
    if let Some(b) = p["exchanged_bytes_per_step"].as_f64().or(p["exchanged_bytes_per_update"].as_f64()) {
        println!("  machines {}, each with those devices; a machine sends and receives {} of f32 gradient sums per {}",
                 p["nodes"], gib(b), if p["kind"] == "rl" { "update" } else { "step" });
    }
    if p["kind"] == "rl" {
        let pr = &p["prompt_tokens"];
        let prompts = match pr["unknown"].as_str() {
            Some(why) => format!("prompt lengths unknown: {why}"),
            None => {
                let left = if f(&pr["left_out"]) > 0.0 { format!(" ({} left out: over rollout.max_prompt_tokens)", pr["left_out"]) } else { String::new() };
                format!("prompts of {:.0} tokens on average, {} at most, over {} tasks{left}", f(&pr["mean"]), pr["max"], pr["tasks"])
            }
        };
        println!("  steps    {} of {} rollouts (≤ {} response tokens each; {prompts})", p["steps"], p["rollouts_per_step"], p["max_response_tokens"]);
        println!("  work     ≤ {:.3} TFLOP per update (rollouts not included)", f(&p["update_flops_per_step_at_most"]) / 1e12);
        let ro = &p["rollout"];
        match ro["skipped"].as_str() {
            Some(why) => println!("  rollouts ≤ {} decoding steps of {} rows{} per step; time not measured ({why})", ro["decode_steps_at_most"], ro["rows"], waves(ro)),
            None => println!("  rollouts ≤ {} per step: ≤ {} decoding steps of {} rows{} at {} each, and encoding their contexts, {} \
                              (random weights, {}-token contexts, on this machine); cells not included",
                             duration(f(&ro["s_at_most"])), ro["decode_steps_at_most"], ro["rows"], waves(ro), duration(f(&ro["token_s"])), duration(f(&ro["prefill_s"])), ro["context"]),
        }
    } else {
        let all = p["devices"].as_u64().unwrap_or(1) * p["nodes"].as_u64().unwrap_or(1);
        let per_device = if all > 1 { format!(", ≤ {} on each of {all} devices", p["forwards_per_device"]) } else { String::new() };
        println!("  batch    {} x {} tokens per forward, {} forwards per step{per_device} ({} tokens)", p["forward"]["rows"], p["forward"]["seq_len"], p["forwards_per_step"], p["batch_tokens"]);
        match p["steps"].as_u64() {
            Some(s) => println!("  steps    {s} ({})", p["steps_from"].as_str().unwrap_or("")),
            None => println!("  steps    {}", p["steps_from"].as_str().unwrap_or("")),
        }
        println!("  work     {:.3} TFLOP per step", f(&p["flops_per_step"]) / 1e12);
    }
    let mem = &p["memory"];
    let parts: Vec<String> = mem["parts"].as_array().into_iter().flatten().map(|x| format!("{} {}", x["part"].as_str().unwrap_or(""), gib(f(&x["bytes"])))).collect();
    let phases = if mem["peak_bytes"] != mem["total_bytes"] { format!("; the update's and the rollouts' parts are not held at once, all sum to {}", gib(f(&mem["total_bytes"]))) } else { String::new() };
    println!("  memory   {} per device at the peak (estimate{phases}): {}", gib(f(&mem["peak_bytes"])), parts.join(", "));
    let t = &p["measured"];
    match t["skipped"].as_str() {
        Some(why) => println!("  time     not measured ({why})"),
        None => {
            let rss = if t["device"] == "cpu" { format!("; peak RSS {}", gib(f(&t["peak_rss_bytes"]))) } else { String::new() };
            let on = format!("{} on this machine, warm-up {}{rss}", t["batch"].as_str().unwrap_or(""), duration(f(&t["warmup_s"])));
            if p["kind"] == "rl" {
                let dp = if p["devices"].as_u64() > Some(1) { format!(" shared among {} devices", p["devices"]) } else { String::new() };
                println!("  time     {} per update micro-batch ({on}); ≤ {} per update of ≤ {} micro-batches{dp}; rollouts not included",
                         duration(f(&t["step_s"])), duration(f(&p["update_s_at_most"])), p["update_forwards_at_most"]);
            } else {
                let total = p["total_s"].as_f64().map_or(String::new(), |s| format!(", {} for {} steps", duration(s), p["steps"]));
                let dp = match (p["devices"].as_u64() > Some(1), t["device"] == "cuda") {
                    (true, true) => "the first device's share of the forwards, gradient transfers not included; ",
                    (true, false) => "the replicas sharing this CPU; ",
                    _ => "",
                };
                println!("  time     {} per step{total}, evaluations and checkpoints not included ({dp}{on})", duration(f(&t["step_s"])));
            }
        }
    }
}
