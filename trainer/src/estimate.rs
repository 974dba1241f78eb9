//! What a run will take, from the model's shape and the stage config: parameters, the
//! memory of one device by part, and the FLOPs of a step. `trainer plan` prints these
//! beside a measured step; README "Planning a run" compares them with measured peaks.
use datasets::PackedSeq;
use model::{lm_head, Compute, Precision, Qwen3Config};

/// Parameter counts of a Qwen3 shape.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Params {
    pub total: usize,
    /// The input embedding (and the LM head, when untied).
    pub embedding: usize,
    /// Weights that multiply activations per token: every linear layer and the LM head.
    pub matmul: usize,
}

pub fn params(c: &Qwen3Config) -> Params {
    let (h, q, kv, v) = (c.hidden_size, q_dim(c), kv_dim(c), c.vocab_size);
    let bias = if c.attention_bias { q + 2 * kv + h } else { 0 };
    let layer_matmul = layer_matmul(c);
    let layer = layer_matmul + bias + 2 * c.head_dim + 2 * h; // + q/k norms, two RMSNorms
    let embedding = if c.tie_word_embeddings { v * h } else { 2 * v * h };
    Params { total: c.num_hidden_layers * layer + h + embedding, embedding, matmul: c.num_hidden_layers * layer_matmul + v * h }
}

/// Weights of one decoder layer's matrices (attention and MLP).
fn layer_matmul(c: &Qwen3Config) -> usize {
    let (h, q, kv, i) = (c.hidden_size, q_dim(c), kv_dim(c), c.intermediate_size);
    h * q + 2 * h * kv + q * h + 3 * h * i
}

fn q_dim(c: &Qwen3Config) -> usize {
    c.num_attention_heads * c.head_dim
}

fn kv_dim(c: &Qwen3Config) -> usize {
    c.num_key_value_heads * c.head_dim
}

/// Bytes of one device's memory by part, each held always or during one phase of a step
/// (an RL step's rollouts and update do not overlap). Allocators keep some more: README
/// "Planning a run" compares the estimate with measured peaks.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Memory {
    pub parts: Vec<(String, f64, Phase)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Always,
    Update,
    Rollout,
}

impl Memory {
    fn add(&mut self, name: &str, bytes: f64, phase: Phase) {
        self.parts.push((name.to_string(), bytes, phase));
    }

    /// Every part added up.
    pub fn total(&self) -> f64 {
        self.parts.iter().map(|(_, b, _)| b).sum()
    }

    /// What is held at once at most: the parts held always and the larger phase.
    pub fn peak(&self) -> f64 {
        let sum = |ph: Phase| self.parts.iter().filter(|(_, _, p)| *p == ph).map(|(_, b, _)| b).sum::<f64>();
        sum(Phase::Always) + sum(Phase::Update).max(sum(Phase::Rollout))
    }
}

/// Training memory of one device for forwards of `rows` sequences of `seq` tokens: the
/// model state (`model_state`), the activations autodiff keeps (every layer's, or with
/// checkpointing the layer inputs and one layer's), the attention's block of scores, and
/// the LM head's chunk (`model::lm_head`).
pub fn training(c: &Qwen3Config, compute: Compute, rows: usize, seq: usize, devices: usize) -> Memory {
    let (h, l) = (c.hidden_size as f64, c.num_hidden_layers as f64);
    let tokens = (rows * seq) as f64;
    let mut m = Memory::default();
    model_state(&mut m, c, compute, devices);
    // Per layer and token, the tensors a layer's backward reads: RMSNorm inputs and outputs,
    // q/k/v before and after norm and RoPE, the attention output, MLP gate/up/activation/
    // product (4-byte floats; bf16 keeps the matmul inputs in 2 bytes).
    let floats = (4 * c.hidden_size + 3 * q_dim(c) + 3 * kv_dim(c) + 4 * c.intermediate_size) as f64;
    let bytes = if compute.precision == Precision::Bf16 { 3.0 } else { 4.0 };
    if compute.gradient_checkpointing {
        m.add("layer inputs (checkpointing)", l * tokens * h * 4.0, Phase::Update);
        m.add("one layer's activations", tokens * floats * bytes, Phase::Update);
    } else {
        m.add("activations", l * tokens * floats * bytes, Phase::Update);
    }
    let block = model::attention::query_block(rows, c.num_attention_heads, seq).min(seq) as f64;
    // Scores and probabilities of a block of queries.
    m.add("attention backward block", rows as f64 * c.num_attention_heads as f64 * block * seq as f64 * 4.0 * 2.0, Phase::Update);
    let v = c.vocab_size as f64;
    let chunk = (lm_head::CHUNK_LOGITS / c.vocab_size).max(1).min(rows * seq) as f64;
    // A chunk's logits and softmax (its gradient takes the place of one); the head
    // weight's gradient, accumulated in f32.
    m.add("LM head chunk", chunk * v * 4.0 * 2.0 + v * h * 4.0, Phase::Update);
    m
}

/// GRPO adds to training the rollout copy of the policy (its matrices in bf16 when the
/// compute is; f32 shares the master weights), the frozen KL reference when `kl`, and
/// the KV cache of `rows` rollouts of up to `tokens` tokens each (prompt and response).
pub fn rl(c: &Qwen3Config, compute: Compute, micro_batch_tokens: usize, rows: usize, tokens: usize, kl: bool, devices: usize) -> Memory {
    let mut m = training(c, compute, 1, micro_batch_tokens, devices);
    let p = params(c).total as f64;
    let bytes = if compute.precision == Precision::Bf16 { 2.0 } else { 4.0 };
    if compute.precision == Precision::Bf16 {
        m.add("rollout copy (bf16 matrices)", 2.0 * p, Phase::Rollout);
    }
    if kl {
        m.add("KL reference", bytes * p, Phase::Always);
    }
    let per_token = (c.num_hidden_layers * 2 * kv_dim(c)) as f64 * bytes;
    m.add("KV cache of the rollouts", (rows * tokens) as f64 * per_token, Phase::Rollout);
    m
}

/// Weights, gradients and AdamW moments: on one device f32 (16 bytes a parameter). With
/// data parallel on `devices` (`parallel`) each device owns about 1/devices of the
/// parameters: their f32 master weights, AdamW moments and gradient sums; it also holds a
/// replica of the step's weights (with bf16 compute the decoder layers' matrices in bf16)
/// and the gradients not yet sent to their owners: without checkpointing a micro-batch's
/// (the replica's size), with it about two layers' and the embedding's and head's (the
/// backward emits each layer's as it finishes it; the rest go last).
fn model_state(m: &mut Memory, c: &Qwen3Config, compute: Compute, devices: usize) {
    let p = params(c).total as f64;
    if devices <= 1 {
        m.add("weights (f32)", 4.0 * p, Phase::Always);
        m.add("gradients (f32)", 4.0 * p, Phase::Update);
        m.add("AdamW moments (f32)", 8.0 * p, Phase::Always);
        return;
    }
    let n = devices as f64;
    let layers = (c.num_hidden_layers * layer_matmul(c)) as f64;
    let (replica_bytes, what) = match compute.precision {
        Precision::F32 => (4.0, "f32"),
        _ => (2.0, "bf16 layer matrices"),
    };
    let replica = replica_bytes * layers + 4.0 * (p - layers);
    m.add(&format!("master weights (f32, a 1/{devices} shard)"), 4.0 * p / n, Phase::Always);
    if compute.gradient_checkpointing {
        let layer = replica_bytes * layer_matmul(c) as f64;
        m.add(&format!("gradients in flight (two layers' {what}, the rest f32)"), 2.0 * layer + 4.0 * (p - layers), Phase::Update);
    } else {
        m.add(&format!("a micro-batch's gradients ({what})"), replica, Phase::Update);
    }
    m.add(&format!("AdamW moments (f32, a 1/{devices} shard)"), 8.0 * p / n, Phase::Always);
    m.add(&format!("replica weights ({what})"), replica, Phase::Update);
    m.add(&format!("gradient sums (f32, a 1/{devices} shard)"), 4.0 * p / n, Phase::Update);
}

/// FLOPs to train on one token of a `seq`-token sequence: 6 per matmul weight (forward
/// and backward) plus causal attention over seq/2 keys on average (QKᵀ and PV); gradient
/// checkpointing adds one forward.
pub fn train_flops_per_token(c: &Qwen3Config, seq: usize, checkpointing: bool) -> f64 {
    let forward = 2.0 * params(c).matmul as f64 + 2.0 * 2.0 * (c.num_hidden_layers * q_dim(c)) as f64 * seq as f64 / 2.0;
    forward * if checkpointing { 4.0 } else { 3.0 }
}

/// Batched decoding as rollouts run it, on a random model of the run's shape.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DecodeTiming {
    /// Encoding the prompts, up to the first token of every row.
    pub prefill_s: f64,
    /// One more token for every row (the mean over the steps after the first).
    pub token_s: f64,
}

/// Times decoding `steps` tokens after `rows` prompts of `prompt` random tokens (on CUDA
/// after a warm-up run that autotunes the kernels), as rollouts decode: the KV cache and the matrices in the compute
/// precision, sampling and stop strings as `sampling` says (its token budget is `steps`).
pub fn time_decode(c: &Qwen3Config, compute: Compute, rows: usize, prompt: usize, steps: usize, sampling: &model::SamplingConfig, tokenizer: Option<&model::Tokenizer>) -> anyhow::Result<DecodeTiming> {
    use burn::tensor::backend::Backend;
    type B = model::DefaultBackend;
    <B as Backend>::seed(&Default::default(), 0);
    let model = model::Qwen3::<B>::init(c, &Default::default()).for_generation(compute.precision);
    let prompts: Vec<Vec<u32>> = random_rows(c.vocab_size, rows, prompt.max(1), prompt.max(1)).into_iter().map(|r| r.ids).collect();
    let steps = steps.max(2);
    let run = |n: usize| {
        let cfg = model::SamplingConfig { max_new_tokens: n, ..sampling.clone() };
        let t0 = std::time::Instant::now();
        let mut first = None;
        model::generate_with(&model, tokenizer, &prompts, &cfg, None, |_| _ = *first.get_or_insert_with(|| t0.elapsed().as_secs_f64()), |_, _| {});
        (first.unwrap_or(0.0), t0.elapsed().as_secs_f64())
    };
    if model::ON_GPU {
        run(2);
    }
    let (prefill_s, total) = run(steps);
    Ok(DecodeTiming { prefill_s, token_s: (total - prefill_s) / (steps - 1) as f64 })
}

/// Timing of optimizer steps on a random model of the run's shape.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StepTiming {
    /// The first step (kernel compilation and autotuning on CUDA).
    pub warmup_s: f64,
    /// Mean of the timed steps after it.
    pub step_s: f64,
    /// The last step's loss.
    pub loss: f64,
    /// The warm-up step's loss and gradient norm (before clipping): from the same seeded
    /// weights and rows on any build, so that builds' forwards and backwards can be
    /// compared on one device.
    pub first_loss: f64,
    pub first_grad_norm: f64,
}

/// Times `steps` optimizer steps (after a warm-up step) over `micro_batches`, as the SFT
/// loop takes them on `devices` (data parallel when several), on randomly initialized
/// weights of `c`'s shape. `on_step(i, secs)` hears of each step as it ends (0: the warm-up).
pub fn time_step(c: &Qwen3Config, compute: Compute, micro_batches: &[Vec<PackedSeq>], steps: usize, devices: &[burn::tensor::Device<model::DefaultBackend>], mut on_step: impl FnMut(usize, f64)) -> anyhow::Result<StepTiming> {
    use burn::tensor::backend::Backend;
    type B = crate::sft::TrainBackend;
    <B as Backend>::seed(&Default::default(), 0);
    let mut model = model::Qwen3::<B>::init(c, &Default::default()).with_stable_ids().with_compute(compute);
    let mut optim = crate::step::Optim::<B>::new(&toml::from_str("lr = 1e-4\nweight_decay = 0.1\nclip = 1.0")?);
    let mbs: Vec<&[PackedSeq]> = micro_batches.iter().map(Vec::as_slice).collect();
    let (mut warmup_s, mut total, mut loss, mut first) = (0.0, 0.0, f64::NAN, (f64::NAN, f64::NAN));
    for i in 0..=steps {
        let t = std::time::Instant::now();
        let (m, s) = optim.step(model, &mbs, 1e-4, devices);
        model = m;
        let stats = s.map_err(|e| anyhow::anyhow!("the timed step: {} is {}", e.what, e.value))?;
        loss = stats.loss;
        let secs = t.elapsed().as_secs_f64();
        on_step(i, secs);
        if i == 0 {
            warmup_s = secs;
            first = (stats.loss, stats.grad_norm);
        } else {
            total += secs;
        }
    }
    Ok(StepTiming { warmup_s, step_s: total / steps.max(1) as f64, loss, first_loss: first.0, first_grad_norm: first.1 })
}

/// `rows` sequences of `seq` random tokens, each made of documents of `doc` tokens (the
/// last one shorter), every next token trained.
pub fn random_rows(vocab: usize, rows: usize, seq: usize, doc: usize) -> Vec<PackedSeq> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let doc = doc.clamp(2, seq);
    let doc_lens: Vec<usize> = (0..seq).step_by(doc).map(|s| doc.min(seq - s)).collect();
    (0..rows)
        .map(|_| PackedSeq {
            ids: (0..seq).map(|_| rng.random_range(0..vocab as u32)).collect(),
            mask: doc_lens.iter().flat_map(|&n| (0..n).map(|i| u8::from(i > 0))).collect(),
            positions: doc_lens.iter().flat_map(|&n| 0..n as u32).collect(),
            doc_lens: doc_lens.clone(),
        })
        .collect()
}

/// Peak resident memory of this process in bytes (a CPU build's training memory).
pub fn peak_rss() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).unwrap_or(0.0) * 1024.0
}
