//! `model-bench`: forward and generation throughput of our Qwen3 on a named shape with
//! random weights; prints one JSON line. `benches/run_model_bench.sh` runs it beside the
//! PyTorch/transformers twin (scripts/pytorch_model.py) on the same shapes and prints ratios.
use anyhow::Result;
use burn::prelude::*;
use clap::Parser;
use model::{generate, DefaultBackend as B, Qwen3, Qwen3Config, SamplingConfig};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Shape file (config.json style), e.g. benches/shapes/qwen3-0.6b.json.
    #[arg(long)]
    shape: std::path::PathBuf,
    /// Prompt tokens for the forward pass and as generation prompt.
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    /// New tokens per generation run.
    #[arg(long, default_value_t = 16)]
    new_tokens: usize,
    /// Timed repetitions (the best is reported, after one warm-up).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    (0..reps).map(|_| { let t = Instant::now(); f(); t.elapsed().as_secs_f64() }).fold(f64::INFINITY, f64::min)
}

fn main() -> Result<()> {
    model::init_runtime().map_err(anyhow::Error::msg)?;
    let args = Args::parse();
    let cfg = Qwen3Config::from_file(&args.shape)?;
    let device = Default::default();
    let model = Qwen3::<B>::init(&cfg, &device);
    let ids: Vec<u32> = (0..args.tokens).map(|i| (i * 7919 % cfg.vocab_size) as u32).collect();
    let tokens = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, args.tokens]),
        &device,
    );
    let forward = best(args.reps, || {
        let logits = model.forward(tokens.clone());
        let _ = logits.into_data(); // force the computation
    });
    let gen = |use_cache| {
        let cfg = SamplingConfig { max_new_tokens: args.new_tokens, use_cache, ..Default::default() };
        best(args.reps, || { generate(&model, None, &[ids.clone()], &cfg); })
    };
    let (with_cache, without_cache) = (gen(true), gen(false));
    let out = serde_json::json!({
        "impl": model::BACKEND_NAME,
        "shape": args.shape.file_stem().unwrap().to_string_lossy(),
        "prompt_tokens": args.tokens, "new_tokens": args.new_tokens,
        "forward_tok_s": args.tokens as f64 / forward,
        "gen_cache_tok_s": args.new_tokens as f64 / with_cache,
        "gen_nocache_tok_s": args.new_tokens as f64 / without_cache,
    });
    println!("{out}");
    Ok(())
}
