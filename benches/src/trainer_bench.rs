//! `trainer-bench`: checks and timings of this build (CPU, or CUDA with `--features cuda`)
//! in one binary, so one file travels to a GPU machine. `parity` compares its log-probs
//! with the committed references (transformers f32, torch.autocast bf16); `sft` times the
//! SFT step (`trainer::step`: packed loss, backward, global-norm clip, AdamW); `generate`
//! times batched greedy generation. Each prints JSON lines; `benches/run_gpu_bench.sh` and
//! `benches/run_sft_bench.sh` run them beside PyTorch.
use anyhow::{bail, Result};
use burn::prelude::*;
use clap::{Parser, Subcommand};
use model::{generate, Checkpoint, Compute, DefaultBackend as B, Precision, Qwen3, Qwen3Config, SamplingConfig};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Log-probs on the parity fixtures: f32 against transformers' f32, bf16 against
    /// torch.autocast(bf16); exits non-zero past the tolerances of the CPU tests.
    Parity {
        #[arg(long, default_value = "model/tests/fixtures/parity")]
        fixtures: PathBuf,
    },
    /// SFT steps (loss, backward, global-norm clip, AdamW) on a random model.
    Sft {
        #[arg(long)]
        shape: PathBuf,
        #[arg(long, default_value_t = 4096)]
        seq: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        #[arg(long, default_value = "bf16")]
        precision: Precision,
        #[arg(long)]
        checkpointing: bool,
        /// Rows per forward (the step is batch / micro_batch forwards, as gradient accumulation).
        #[arg(long)]
        micro_batch: Option<usize>,
        /// Data-parallel replicas (`[compute] devices`): GPUs 0..N, or threads on the CPU.
        #[arg(long, default_value_t = 1)]
        devices: usize,
    },
    /// Batched greedy generation of exactly `new_tokens` per row from random prompts.
    Generate {
        #[arg(long)]
        shape: PathBuf,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        prompt: usize,
        #[arg(long, default_value_t = 256)]
        new_tokens: usize,
        #[arg(long, default_value = "bf16")]
        precision: Precision,
    },
}

const IMPL: &str = if cfg!(feature = "cuda") { "burn-cuda" } else { "burn-flex" };

fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Parity { fixtures } => parity(&fixtures),
        Cmd::Sft { shape, seq, batch, steps, precision, checkpointing, micro_batch, devices } => sft(&shape, seq, batch, steps, precision, checkpointing, micro_batch, devices),
        Cmd::Generate { shape, batch, prompt, new_tokens, precision } => gen(&shape, batch, prompt, new_tokens, precision),
    }
}

fn read(p: &std::path::Path) -> Result<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)?)
}

/// Mean and largest |Δ| between per-token log-probs and a `[batch][seq-1]` reference.
fn deviation(ours: &[f32], t: usize, want: &Value) -> (f32, f32) {
    let (mut sum, mut n, mut max) = (0f32, 0, 0f32);
    for (b, row) in want.as_array().into_iter().flatten().enumerate() {
        for (i, v) in row.as_array().into_iter().flatten().enumerate() {
            let d = (ours[b * (t - 1) + i] - v.as_f64().unwrap_or(f64::NAN) as f32).abs();
            (sum, n, max) = (sum + d, n + 1, max.max(d));
        }
    }
    (sum / n.max(1) as f32, max)
}

fn parity(fixtures: &std::path::Path) -> Result<()> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures)?.flatten().map(|e| e.path()).filter(|p| p.join("expected.json").exists()).collect();
    cases.sort();
    let mut failed = 0;
    for dir in cases {
        let ck = Checkpoint::<B>::load(&dir, &Default::default())?;
        let exp = read(&dir.join("expected.json"))?;
        let autocast = read(&dir.join("bf16.json"))?["next_token_logprobs"].clone();
        let rows: Vec<Vec<i64>> = exp["input_ids"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()).collect();
        let t = rows[0].len();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(rows.concat(), [rows.len(), t]), &Default::default());
        let logprobs = |m: &Qwen3<B>| m.next_token_logprobs(tokens.clone()).0.into_data().convert::<f32>().to_vec::<f32>().unwrap();
        let f32_lp = logprobs(&ck.model);
        let bf16 = ck.model.clone().for_generation(Precision::Bf16);
        let bf16_lp = logprobs(&bf16);
        let (_, f32_max) = deviation(&f32_lp, t, &exp["next_token_logprobs"]);
        let (spread, _) = deviation(&f32_lp, t, &autocast);
        let (bf_mean, bf_max) = deviation(&bf16_lp, t, &autocast);
        // The CPU tests' bounds: f32 within 1e-4 of transformers; bf16 within the spread
        // of bf16 implementations (1.5x autocast's own distance from f32) of autocast.
        let ok = f32_max < 1e-4 && bf_mean < 1.5 * spread && bf_max < 0.25;
        failed += usize::from(!ok);
        println!("{}", json!({"check": "parity", "impl": IMPL, "case": dir.file_name().unwrap().to_string_lossy(), "ok": ok,
                               "f32_max_abs_vs_transformers": f32_max, "bf16_mean_abs_vs_autocast": bf_mean,
                               "bf16_max_abs_vs_autocast": bf_max, "autocast_mean_abs_vs_f32": spread}));
    }
    if failed > 0 {
        bail!("{failed} parity case(s) outside tolerance");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn sft(shape: &std::path::Path, seq: usize, batch: usize, steps: usize, precision: Precision, checkpointing: bool, micro_batch: Option<usize>, devices: usize) -> Result<()> {
    let cfg = Qwen3Config::from_file(shape)?;
    let compute = Compute { precision, gradient_checkpointing: checkpointing };
    let seqs = trainer::estimate::random_rows(cfg.vocab_size, batch, seq, seq);
    let micro: Vec<Vec<_>> = seqs.chunks(micro_batch.unwrap_or(batch).max(1)).map(<[_]>::to_vec).collect();
    let devices = model::devices(devices).map_err(anyhow::Error::msg)?;
    let t = trainer::estimate::time_step(&cfg, compute, &micro, steps, &devices)?;
    println!("{}", json!({"check": "sft", "impl": IMPL, "compute": compute.to_string(), "shape": shape.file_stem().unwrap().to_string_lossy(),
                           "seq": seq, "batch": batch, "micro_batches": micro.len(), "devices": devices.len(), "step_s": t.step_s, "tokens_per_s": (seq * batch) as f64 / t.step_s,
                           "warmup_s": t.warmup_s, "loss": t.loss, "peak_rss_mb": trainer::estimate::peak_rss() / (1u64 << 20) as f64}));
    Ok(())
}

fn gen(shape: &std::path::Path, batch: usize, prompt: usize, new_tokens: usize, precision: Precision) -> Result<()> {
    let cfg = Qwen3Config::from_file(shape)?;
    <B as Backend>::seed(&Default::default(), 0);
    let model = Qwen3::<B>::init(&cfg, &Default::default()).for_generation(precision);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let prompts: Vec<Vec<u32>> = (0..batch).map(|_| (0..prompt).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect()).collect();
    let sampling = SamplingConfig { max_new_tokens: new_tokens, temperature: 0.0, ..Default::default() };
    let run = |n: usize| {
        let s = SamplingConfig { max_new_tokens: n, ..sampling.clone() };
        let t = Instant::now();
        let out = generate(&model, None, &prompts, &s);
        (t.elapsed().as_secs_f64(), out.iter().map(|g| g.tokens.len()).sum::<usize>())
    };
    let (warmup, _) = run(8); // warm-up (and autotune)
    let (secs, generated) = run(new_tokens);
    println!("{}", json!({"check": "generate", "impl": IMPL, "precision": format!("{precision:?}").to_lowercase(),
                           "shape": shape.file_stem().unwrap().to_string_lossy(), "batch": batch, "prompt": prompt,
                           "new_tokens": new_tokens, "generated": generated, "secs": secs, "tokens_per_s": generated as f64 / secs,
                           "warmup_s": warmup}));
    Ok(())
}
