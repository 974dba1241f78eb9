//! SFT step throughput and peak memory of our trainer (`trainer::step`: packed loss,
//! backward, global-norm clip, AdamW) on a random model of a given shape; prints one JSON
//! line. `benches/run_sft_bench.sh` runs it beside `scripts/pytorch_sft.py`.
use burn::prelude::Backend;
use datasets::PackedSeq;
use model::{Qwen3, Qwen3Config};
use rand::{Rng, SeedableRng};
use std::time::Instant;
use trainer::sft::TrainBackend;
use trainer::step::Optim;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

fn main() {
    let shape = arg("--shape", "benches/shapes/tiny.json");
    let (seq, batch, steps): (usize, usize, usize) = (arg("--seq", "512").parse().unwrap(), arg("--batch", "4").parse().unwrap(), arg("--steps", "3").parse().unwrap());
    let cfg = Qwen3Config::from_file(std::path::Path::new(&shape)).expect("shape");
    <TrainBackend as Backend>::seed(&Default::default(), 0);
    let mut model = Qwen3::<TrainBackend>::init(&cfg, &Default::default()).with_stable_ids();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let seqs: Vec<PackedSeq> = (0..batch)
        .map(|_| PackedSeq {
            ids: (0..seq).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect(),
            mask: (0..seq).map(|i| u8::from(i > 0)).collect(),
            positions: (0..seq as u32).collect(),
            doc_lens: vec![seq],
        })
        .collect();
    let spec = toml::from_str("lr = 1e-4\nweight_decay = 0.1\nclip = 1.0").unwrap();
    let mut optim = Optim::<TrainBackend>::new(&spec);
    let mbs: Vec<&[PackedSeq]> = vec![&seqs];
    let (m, _) = optim.step(model, &mbs, 1e-4); // warm-up
    model = m;
    let t0 = Instant::now();
    for _ in 0..steps {
        let (m, s) = optim.step(model, &mbs, 1e-4);
        s.expect("finite");
        model = m;
    }
    let secs = t0.elapsed().as_secs_f64() / steps as f64;
    let name = std::path::Path::new(&shape).file_stem().unwrap().to_string_lossy().to_string();
    println!(
        "{}",
        serde_json::json!({"impl": "ours (burn-flex)", "shape": name, "seq": seq, "batch": batch,
                           "tokens_per_s": (seq * batch) as f64 / secs, "step_s": secs, "peak_rss_mb": peak_rss_mb()})
    );
}
