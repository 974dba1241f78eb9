//! The Qwen3 decoder, field names mirroring the checkpoint (`model.layers.N.self_attn.q_proj`
//! ...). A pure function of (weights, tokens, positions, cache): the KV cache lives outside
//! the modules so one set of weights serves training, scoring and many rollouts.
use crate::backend::{ModelBackend, TrainingBackend};
use crate::lm_head::{self, Head};
use crate::rope::{rotary, Rope};
use burn::module::{AutodiffModule, Param};
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use crate::swiglu::swiglu;
use burn::tensor::activation::log_softmax;
use burn::tensor::{FloatDType, TensorPrimitive};

/// Precision of the matmuls and attention. `Bf16` follows `torch.autocast(bfloat16)`:
/// linear layers and attention in bf16, the residual stream, norms, RoPE and the
/// log-softmax in f32, parameters (the master weights) as stored; unlike autocast the
/// embedding rows are rounded to bf16 too, so a copy with bf16 matrices (the rollout
/// policy) computes the same numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("`{s}`: expected f32 or bf16")),
        }
    }
}

impl Precision {
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
        }
    }
}

/// How the model computes: precision, and whether training recomputes each layer in
/// the backward instead of keeping its activations (transformers' gradient checkpointing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compute {
    #[serde(default)]
    pub precision: Precision,
    #[serde(default)]
    pub gradient_checkpointing: bool,
}

impl std::fmt::Display for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.precision {
            Precision::F32 => write!(f, "f32")?,
            Precision::Bf16 => write!(f, "bf16 (f32 master weights)")?,
        }
        if self.gradient_checkpointing {
            write!(f, ", gradient checkpointing")?;
        }
        Ok(())
    }
}

/// `x` in `dtype` (no op, and no autodiff node, when it already is).
fn to<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    if x.dtype() == dtype.into() {
        x
    } else {
        x.cast(dtype)
    }
}

/// A linear layer computed in `dtype` (the weights cast for the product, as autocast).
fn proj<B: ModelBackend, const D: usize>(l: &Linear<B>, x: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    let y = crate::matmul::linear(to(x, dtype), to(l.weight.val(), dtype));
    match &l.bias {
        Some(bias) => y + to(bias.val(), dtype).unsqueeze(),
        None => y,
    }
}

/// RMSNorm in f32 whatever the input's and the gain's dtypes (Qwen3RMSNorm's upcast).
fn norm<B: ModelBackend, const D: usize>(n: &RmsNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    crate::norm::rms_norm(x, n.gamma.val(), n.epsilon)
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub q_norm: RmsNorm<B>,
    pub k_norm: RmsNorm<B>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub self_attn: Attention<B>,
    pub mlp: Mlp<B>,
    pub input_layernorm: RmsNorm<B>,
    pub post_attention_layernorm: RmsNorm<B>,
}

#[derive(Module, Debug)]
pub struct Qwen3<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when the checkpoint ties the LM head to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    pub rope: Rope,
    #[module(skip)]
    pub compute: Compute,
}

/// Keys and values of every layer for the tokens seen so far (after QK-norm and RoPE,
/// with the checkpoint's KV heads, before they are repeated for GQA), in the compute dtype.
///
/// Stored with room to spare: capacity grows `block` positions at a time and a decoding
/// step writes its keys in place ([`ModelBackend::kv_write`]) rather than copying the
/// cache to append. Its attention ([`ModelBackend::decode_attention`]) reads the whole
/// capacity on CUDA, the spare keys masked as future positions, so that the shapes it sees
/// change once a block rather than every token (each new shape is a new autotune: burn
/// keys its matmul and attention kernels by size, down to each dimension's power-of-two
/// factor, and maybe new compiles); on Flex only the filled keys, where they lie. A
/// prefill reads the filled keys, as plain causal attention.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// Per layer: keys and values `[batch, kv_heads, capacity, head_dim]` and the number of
    /// positions filled.
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>, usize)>>,
    block: usize,
}

/// Positions a [`KvCache`] grows by unless told otherwise ([`crate::SamplingConfig`]).
pub const DEFAULT_KV_BLOCK: usize = 256;

impl<B: Backend> KvCache<B> {
    pub fn new(num_layers: usize, block: usize) -> Self {
        assert!(block > 0, "a KV cache grows by at least one position");
        Self { layers: vec![None; num_layers], block }
    }
    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |l| l.2)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Keys attention reads once `t` more positions are appended (asked before the forward;
    /// every layer is alike then): a decoding step (one position) the whole capacity, a
    /// prefill the filled keys, as plain causal attention (its shapes are new anyway).
    fn keys_read(&self, t: usize) -> usize {
        if t == 1 { self.capacity_after(0, 1) } else { self.len() + t }
    }
    /// Layer `layer`'s capacity once `t` more positions are appended.
    fn capacity_after(&self, layer: usize, t: usize) -> usize {
        let (capacity, len) = self.layers[layer].as_ref().map_or((0, 0), |l| (l.0.dims()[2], l.2));
        capacity.max((len + t).div_ceil(self.block) * self.block)
    }
    /// Keeps only these batch rows (in this order), e.g. once the others have finished.
    pub fn keep_rows(&mut self, rows: &[usize]) {
        for (k, v, _) in self.layers.iter_mut().flatten() {
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]), &k.device());
            *k = k.clone().select(0, idx.clone());
            *v = v.clone().select(0, idx);
        }
    }
    /// Row `row`'s cache from position `from` on (its left padding left out), copied out
    /// of the batch so that the batch's tensors can be freed.
    pub fn row(&self, row: usize, from: usize) -> Self {
        let len = self.len();
        let take = |x: &Tensor<B, 4>| {
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![row as i64], [1]), &x.device());
            let [_, h, _, d] = x.dims();
            x.clone().select(0, idx).slice([0..1, 0..h, from..len, 0..d])
        };
        Self { layers: self.layers.iter().map(|l| l.as_ref().map(|(k, v, _)| (take(k), take(v), len - from))).collect(), block: self.block }
    }

    /// A batch cache from one-row caches: row r is `zeros` masked (left padding) positions,
    /// then the first `cached` positions of its own cache; every row's two sum to the same
    /// length, and some row has a cache. It grows `block` positions at a time.
    pub fn from_rows(rows: &[(usize, Option<&KvCache<B>>, usize)], block: usize) -> Self {
        let template = rows.iter().find_map(|r| r.1).expect("a row with a cache");
        let len = rows[0].0 + rows[0].2;
        let layers = (0..template.layers.len()).map(|l| {
            let (tk, _, _) = template.layers[l].as_ref().expect("a filled cache");
            let [_, h, _, d] = tk.dims();
            let (device, dtype) = (tk.device(), tk.dtype());
            // Keys (0) or values (1) of every row, padding first.
            let side = |which: usize| {
                let rows = rows.iter().map(|&(zeros, cache, cached)| {
                    let mut parts = vec![];
                    if zeros > 0 {
                        parts.push(Tensor::<B, 4>::zeros([1, h, zeros, d], (&device, dtype)));
                    }
                    if cached > 0 {
                        let (k, v, _) = cache.and_then(|c| c.layers[l].as_ref()).expect("cached positions need a filled cache");
                        parts.push([k, v][which].clone().slice([0..1, 0..h, 0..cached, 0..d]));
                    }
                    Tensor::cat(parts, 2)
                });
                Tensor::cat(rows.collect(), 0)
            };
            Some((side(0), side(1), len))
        });
        Self { layers: layers.collect(), block }
    }
}

impl<B: ModelBackend> KvCache<B> {
    /// Writes `t` new positions after the filled ones (growing by whole blocks when they do
    /// not fit) and returns the layer's keys and values over the keys attention reads
    /// ([`Self::keys_read`]) and the number of positions filled.
    fn append(&mut self, layer: usize, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>, usize) {
        let [b, h, t, d] = k.dims();
        let keys = self.capacity_after(layer, t);
        let grow = |x: Tensor<B, 4>| {
            let have = x.dims()[2];
            if have == keys {
                return x;
            }
            let spare = Tensor::<B, 4>::zeros([b, h, keys - have, d], (&x.device(), x.dtype()));
            Tensor::cat(vec![x, spare], 2)
        };
        let (k, v, len) = match self.layers[layer].take() {
            None => (grow(k), grow(v), t),
            // Filled to capacity and growing by exactly the new positions (always, with
            // blocks of 1): append them.
            Some((pk, pv, n)) if pk.dims()[2] == n && keys == n + t => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2), n + t),
            Some((pk, pv, n)) => {
                let write = |cache: Tensor<B, 4>, new: Tensor<B, 4>| Tensor::from_primitive(TensorPrimitive::Float(B::kv_write(cache.into_primitive().tensor(), new.into_primitive().tensor(), n)));
                (write(grow(pk), k), write(grow(pv), v), n + t)
            }
        };
        self.layers[layer] = Some((k.clone(), v.clone(), len));
        if t > 1 && len < keys {
            let filled = |x: Tensor<B, 4>| x.slice([0..b, 0..h, 0..len, 0..d]);
            return (filled(k), filled(v), len);
        }
        (k, v, len)
    }
}

/// Which keys each query may see.
#[derive(Debug, Clone)]
pub enum AttnMask<B: Backend> {
    /// Every row is real tokens: plain causal attention (aligned to the end of the cache).
    Causal,
    /// `[batch, keys]`, true where the key is a real token (left padding is false);
    /// combined with causality here.
    KeyPadding(Tensor<B, 2, Bool>),
    /// Packed sequences (no cache): per row, the lengths of its consecutive documents
    /// (summing to the row length), each attending causally to itself only. Computed per
    /// document, so attention costs Σ len² rather than seq².
    Documents(Vec<Vec<usize>>),
}

/// The mask as each layer applies it.
enum LayerMask<B: Backend> {
    /// Causal, the queries the last positions of the keys; with a tensor (`[batch, 1,
    /// queries, keys]`, true = masked) that hides padding keys as well as future ones.
    Causal(Option<Tensor<B, 4, Bool>>),
    Documents(Vec<Vec<usize>>),
}

impl<B: ModelBackend> Attention<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: Tensor<B, 4>,
        sin: Tensor<B, 4>,
        mask: &LayerMask<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
        dt: FloatDType,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let x = to(x, dt); // once for the three projections (each would cast its own copy)
        let heads = |y: Tensor<B, 3>, n: usize| y.reshape([b, t, n, d]);
        // QK-norm and RoPE on [b, t, heads, d], as the projections lay it out (elementwise
        // work on a contiguous tensor; after the swap it would be a strided walk on CPU).
        let q = to(rotary(norm(&self.q_norm, heads(proj(&self.q_proj, x.clone(), dt), h)), cos.clone(), sin.clone()), dt).swap_dims(1, 2);
        let k = to(rotary(norm(&self.k_norm, heads(proj(&self.k_proj, x.clone(), dt), kvh)), cos, sin), dt).swap_dims(1, 2);
        let v = heads(proj(&self.v_proj, x, dt), kvh).swap_dims(1, 2);
        let (k, v, filled) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => {
                let keys = k.dims()[2];
                (k, v, keys)
            }
        };
        let prim = |x: Tensor<B, 4>| x.into_primitive().tensor();
        let float = |x| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
        if let (1, LayerMask::Causal(m)) = (t, mask) {
            // One new position (decoding): it sees every cached key but padding, so the
            // query heads of a KV head go in as that head's rows; no repeated K/V copies.
            let q = q.reshape([b, kvh, h / kvh, d]);
            let out = B::decode_attention(prim(q), prim(k), prim(v), m.clone().map(Tensor::into_primitive), filled);
            return proj(&self.o_proj, float(out).reshape([b, 1, h * d]), dt);
        }
        let out = match mask {
            LayerMask::Causal(m) => float(B::prefill_attention(prim(q), prim(k), prim(v), m.clone().map(Tensor::into_primitive))),
            LayerMask::Documents(rows) => float(B::causal_attention(prim(q), prim(k), prim(v), rows)),
        };
        proj(&self.o_proj, out.swap_dims(1, 2).reshape([b, t, h * d]), dt)
    }
}

/// Casts 2-D parameters (matrices) to a dtype; norm gains and biases stay. A parameter
/// that takes gradients stays a leaf that does (the cast's output would be an inner node).
struct CastMatrices(FloatDType);

impl<B: Backend> burn::module::ModuleMapper<B> for CastMatrices {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = p.consume();
        let tensor = match (D, tensor.is_require_grad()) {
            (2, true) => to(tensor, self.0).detach().require_grad(),
            (2, false) => to(tensor, self.0),
            _ => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// GQA: each KV head serves `n_rep` query heads.
pub(crate) fn repeat_kv<B: Backend>(x: Tensor<B, 4>, n_rep: usize) -> Tensor<B, 4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kvh, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kvh, n_rep, s, d]).reshape([b, kvh * n_rep, s, d])
}

impl<B: ModelBackend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 3>, dt: FloatDType) -> Tensor<B, 3> {
        let x = to(x, dt); // once for both projections
        proj(&self.down_proj, swiglu(proj(&self.gate_proj, x.clone(), dt), proj(&self.up_proj, x, dt)), dt)
    }
}

impl<B: ModelBackend> DecoderLayer<B> {
    /// The residual stream after this layer (f32 in, f32 out).
    fn forward(&self, x: Tensor<B, 3>, rope: &(Tensor<B, 4>, Tensor<B, 4>), mask: &LayerMask<B>, cache: Option<(&mut KvCache<B>, usize)>, dt: FloatDType) -> Tensor<B, 3> {
        let attn = self.self_attn.forward(norm(&self.input_layernorm, x.clone()), rope.0.clone(), rope.1.clone(), mask, cache, dt);
        let x = x + to(attn, FloatDType::F32);
        let mlp = self.mlp.forward(norm(&self.post_attention_layernorm, x.clone()), dt);
        x + to(mlp, FloatDType::F32)
    }
}

impl<B: Backend> Qwen3<B> {
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    pub fn device(&self) -> B::Device {
        self.embed_tokens.weight.device()
    }

    pub fn with_compute(mut self, compute: Compute) -> Self {
        self.compute = compute;
        self
    }

    /// The model computing in `precision`, its matrices stored in it (generation, eval).
    pub fn for_generation(self, precision: Precision) -> Self {
        let m = self.with_compute(Compute { precision, gradient_checkpointing: false });
        match precision {
            Precision::F32 => m,
            p => m.with_matrices_in(p.dtype()),
        }
    }

    /// The model with its matrices stored in `dtype` (for inference: bf16 matrices halve
    /// the memory and the bytes each decoding step reads). Norm gains and biases stay as
    /// they are, so in the compute dtype this computes exactly what the master weights do.
    pub fn with_matrices_in(self, dtype: FloatDType) -> Self {
        self.map(&mut CastMatrices(dtype))
    }

    /// The model with only its decoder layers' matrices stored in `dtype`: a data-parallel
    /// training replica (`trainer::parallel`). In the compute dtype it computes what the
    /// master weights do, and the layers' gradients come out in `dtype` (the values an
    /// autocast step casts up), while the embedding's (summed over tokens) and the LM
    /// head's (summed over chunks) are still summed in f32.
    pub fn with_layer_matrices_in(mut self, dtype: FloatDType) -> Self {
        self.layers = self.layers.into_iter().map(|l| l.map(&mut CastMatrices(dtype))).collect();
        self
    }

    /// Gives every parameter an id from its place in the module (0, 1, 2, ... in field
    /// order), so optimizer state saved by one process matches the same model loaded from
    /// safetensors by another (burn's ids are random at creation).
    pub fn with_stable_ids(self) -> Self {
        struct Renumber(u64);
        impl<B: Backend> burn::module::ModuleMapper<B> for Renumber {
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
                let (_, tensor, mapper) = p.consume();
                self.0 += 1;
                Param::from_mapped_value(burn::module::ParamId::from(self.0), tensor, mapper)
            }
        }
        self.map(&mut Renumber(0))
    }
}

impl<B: ModelBackend> Qwen3<B> {
    /// Logits `[batch, seq, vocab]` (f32) from hidden states, the product in the compute dtype.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let dt = self.compute.precision.dtype();
        let logits = match &self.lm_head {
            Some(head) => proj(head, hidden, dt),
            // 2-D so backends can read the transposed embedding in place (Flex copies a
            // transposed operand once it is reshaped to 3-D: 14x slower generation).
            None => {
                let [b, t, h] = hidden.dims();
                let w = to(self.embed_tokens.weight.val(), dt);
                let v = w.dims()[0];
                crate::matmul::matmul(to(hidden.reshape([b * t, h]), dt), w.transpose()).reshape([b, t, v])
            }
        };
        to(logits, FloatDType::F32)
    }

    /// Final hidden states `[batch, seq, hidden]` (f32) for `tokens` at `positions`
    /// (`[batch][seq]`), appending to `cache` when given.
    pub fn forward_hidden(
        &self,
        tokens: Tensor<B, 2, Int>,
        positions: &[Vec<usize>],
        mask: &AttnMask<B>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let [b, t] = tokens.dims();
        let past = cache.as_ref().map_or(0, |c| c.len());
        let keys = cache.as_ref().map_or(past + t, |c| c.keys_read(t));
        let (rope, mask) = self.prepare(positions, &with_spare_keys(mask, b, t, past, keys, &tokens.device()), past, &tokens.device());
        let mut x = self.embed(tokens);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, &rope, &mask, cache.as_deref_mut().map(|c| (c, i)), self.compute.precision.dtype());
        }
        norm(&self.norm, x)
    }

    /// The embeddings of `tokens` as the f32 residual stream, rounded to the compute
    /// dtype on the way (as a lookup in the matrix that dtype stores).
    fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = crate::embedding::embedding(self.embed_tokens.weight.val(), tokens);
        to(to(x, self.compute.precision.dtype()), FloatDType::F32)
    }

    /// RoPE's cos/sin for `positions` and the mask as each layer applies it.
    fn prepare(&self, positions: &[Vec<usize>], mask: &AttnMask<B>, past: usize, device: &B::Device) -> ((Tensor<B, 4>, Tensor<B, 4>), LayerMask<B>) {
        let t = positions[0].len();
        let mask = match mask {
            AttnMask::Causal => LayerMask::Causal(None),
            AttnMask::KeyPadding(valid) => LayerMask::Causal(Some(padding_causal_mask(valid.clone(), t, past))),
            AttnMask::Documents(rows) => {
                assert!(past == 0 && rows.iter().all(|r| r.iter().sum::<usize>() == t), "document lengths must cover each row; no cache");
                LayerMask::Documents(rows.clone())
            }
        };
        (self.rope.cos_sin::<B>(positions, device), mask)
    }

    /// Logits for unpadded sequences starting at position 0.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = tokens.dims();
        let positions = vec![(0..t).collect::<Vec<_>>(); b];
        self.logits(self.forward_hidden(tokens, &positions, &AttnMask::Causal, None))
    }

    /// log p(target) and the entropy of p (not differentiated) for each row of `hidden`
    /// (`[n, hidden]`, final hidden states), p = softmax(logits / temperature): `([n], [n])`,
    /// without materializing the `[n, vocab]` logits ([`lm_head`]).
    pub fn token_logprobs(&self, hidden: Tensor<B, 2>, targets: Tensor<B, 1, Int>, temperature: f64) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let (weight, vocab_major) = match &self.lm_head {
            Some(head) => (head.weight.val(), false),
            None => (self.embed_tokens.weight.val(), true),
        };
        let head = Head::new(temperature, self.compute.precision.dtype(), self.vocab_size(), vocab_major);
        lm_head::token_logprobs(hidden, weight, targets, head)
    }

    /// Teacher-forced log-probability of each next token: `[batch, seq-1]`, entry `i` is
    /// `log p(tokens[i+1] | tokens[..=i])`. Also returns the logits for inspection.
    pub fn next_token_logprobs(&self, tokens: Tensor<B, 2, Int>) -> (Tensor<B, 2>, Tensor<B, 3>) {
        let [b, t] = tokens.dims();
        let logits = self.forward(tokens.clone());
        let logp = log_softmax(logits.clone().slice([0..b, 0..t - 1]), 2);
        let targets = tokens.slice([0..b, 1..t]).unsqueeze_dim::<3>(2);
        (logp.gather(2, targets).squeeze_dim::<2>(2), logits)
    }
}

impl<B: TrainingBackend> Qwen3<B> {
    /// The model without autodiff for generation and scoring, its weights in the compute
    /// dtype (rounding f32 master weights to bf16 gives the bf16 weights the training
    /// forward multiplies with, so rollout and update log-probs agree).
    pub fn for_inference(&self) -> Qwen3<B::InnerBackend> {
        self.valid().for_generation(self.compute.precision)
    }

    /// Runs the model to final hidden states, `head` to a scalar loss, and the backward;
    /// returns the loss and every parameter's gradient ([`Self::loss_and_grads_streamed`]
    /// gathered in one).
    pub fn loss_and_grads(
        &self,
        tokens: Tensor<B, 2, Int>,
        positions: &[Vec<usize>],
        mask: &AttnMask<B>,
        head: impl FnOnce(&Self, Tensor<B, 3>) -> Tensor<B, 1>,
    ) -> (Tensor<B::InnerBackend, 1>, GradientsParams) {
        let mut all = GradientsAccumulator::<Self>::new();
        let loss = self.loss_and_grads_streamed(tokens, positions, mask, head, |g| all.accumulate(self, g));
        (loss, all.grads())
    }

    /// [`Self::loss_and_grads`], handing the gradients to `emit` as they are complete, each
    /// parameter's once. With `compute.gradient_checkpointing`, a first forward without
    /// autodiff keeps only each layer's input; the backward then recomputes one layer at a
    /// time and carries the hidden state's gradient down (one extra forward; activation
    /// memory is one layer's plus the layer inputs, as transformers' gradient
    /// checkpointing), emitting each layer's gradients as soon as its backward is done (last
    /// layer first; a data-parallel replica sends them on and frees them), then the final
    /// norm's, the LM head's and the embedding's together. Without checkpointing, one emit.
    pub fn loss_and_grads_streamed(
        &self,
        tokens: Tensor<B, 2, Int>,
        positions: &[Vec<usize>],
        mask: &AttnMask<B>,
        head: impl FnOnce(&Self, Tensor<B, 3>) -> Tensor<B, 1>,
        mut emit: impl FnMut(GradientsParams),
    ) -> Tensor<B::InnerBackend, 1> {
        if !self.compute.gradient_checkpointing {
            let loss = head(self, self.forward_hidden(tokens, positions, mask, None));
            emit(GradientsParams::from_grads(loss.backward(), self));
            return loss.inner();
        }
        let dt = self.compute.precision.dtype();
        let inner = self.valid();
        let inner_mask = match mask {
            AttnMask::Causal => AttnMask::Causal,
            AttnMask::KeyPadding(m) => AttnMask::KeyPadding(m.clone().inner()),
            AttnMask::Documents(d) => AttnMask::Documents(d.clone()),
        };
        let (rope, layer_mask) = inner.prepare(positions, &inner_mask, 0, &inner.device());
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = inner.embed(tokens.clone().inner());
        for layer in &inner.layers {
            inputs.push(x.clone());
            x = layer.forward(x, &rope, &layer_mask, None, dt);
        }
        drop((rope, layer_mask));
        // Top: final norm, LM head and loss; then each layer, last first. The top's
        // gradients wait for the embedding's (a tied head is the same parameter).
        let mut rest = GradientsAccumulator::<Self>::new();
        let top = Tensor::<B, 3>::from_inner(x).require_grad();
        let loss = head(self, norm(&self.norm, top.clone()));
        let mut grads = loss.backward();
        let mut g = top.grad_remove(&mut grads).expect("the loss depends on the hidden states");
        rest.accumulate(self, GradientsParams::from_grads(grads, self));
        let (rope, layer_mask) = self.prepare(positions, mask, 0, &tokens.device());
        for (layer, x) in self.layers.iter().zip(inputs).rev() {
            let x = Tensor::<B, 3>::from_inner(x).require_grad();
            let y = layer.forward(x.clone(), &rope, &layer_mask, None, dt);
            let mut grads = (y * Tensor::from_inner(g)).sum().backward();
            g = x.grad_remove(&mut grads).expect("a layer's output depends on its input");
            emit(GradientsParams::from_grads(grads, layer));
        }
        let grads = (self.embed(tokens) * Tensor::from_inner(g)).sum().backward();
        rest.accumulate(self, GradientsParams::from_grads(grads, self));
        emit(rest.grads());
        loss.inner()
    }
}

/// `mask` over `keys` keys where the sequence has `past + t`: a cache's spare capacity
/// past the sequence is masked (as future positions, which causality hides already).
fn with_spare_keys<B: Backend>(mask: &AttnMask<B>, b: usize, t: usize, past: usize, keys: usize, device: &B::Device) -> AttnMask<B> {
    let spare = keys - (past + t);
    if spare == 0 {
        return mask.clone();
    }
    fn trues<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D, Bool> {
        Tensor::from_data(TensorData::new(vec![true; shape.iter().product()], shape), device)
    }
    match mask {
        AttnMask::Causal => AttnMask::KeyPadding(trues([b, keys], device)),
        AttnMask::KeyPadding(valid) => AttnMask::KeyPadding(Tensor::cat(vec![valid.clone(), trues([b, spare], device)], 1)),
        AttnMask::Documents(_) => unreachable!("packed documents are never cached"),
    }
}

/// `[batch, 1, t, past + t]`, true = masked: a padding key, or a key after the query.
fn padding_causal_mask<B: Backend>(valid: Tensor<B, 2, Bool>, t: usize, past: usize) -> Tensor<B, 4, Bool> {
    let [b, keys] = valid.dims();
    let device = valid.device();
    let q_pos = Tensor::<B, 1, Int>::arange(past as i64..(past + t) as i64, &device).reshape([1, 1, t, 1]);
    let k_pos = Tensor::<B, 1, Int>::arange(0..keys as i64, &device).reshape([1, 1, 1, keys]);
    let future = k_pos.greater(q_pos); // [1,1,t,keys] via broadcast
    let padding = valid.bool_not().reshape([b, 1, 1, keys]);
    future.expand([b, 1, t, keys]).bool_or(padding.expand([b, 1, t, keys]))
}

/// Used by the loader: a `Linear` from a Hugging Face `[out, in]` weight given as host data.
pub(crate) fn linear_from_hf<B: Backend>(w: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Linear<B> {
    Linear { weight: Param::from_tensor(w), bias: bias.map(Param::from_tensor) }
}

pub(crate) fn rms_norm<B: Backend>(gamma: Tensor<B, 1>, eps: f64) -> RmsNorm<B> {
    RmsNorm { gamma: Param::from_tensor(gamma), epsilon: eps }
}
