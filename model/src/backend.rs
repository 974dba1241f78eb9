//! The backends the model runs on. Two ops get their own autodiff: causal attention
//! ([`crate::attention`]) and the log-probabilities of chosen tokens through the LM head
//! ([`crate::lm_head`]); both recompute in the backward instead of keeping a tensor that
//! grows with length² or with length × vocabulary. Generation's attention and KV cache
//! writes are ops too, so that a backend can do them its own way (Flex: in place, on every
//! core).
use crate::adamw::AdamWStep;
use crate::attention::{BlockRows, Documents};
use crate::lm_head::{self, Head};
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{AttentionModuleOptions, BoolTensor, FloatTensor, IntTensor};
use burn::tensor::{TensorMetadata, TensorPrimitive};

pub trait ModelBackend: Backend {
    /// softmax(q kᵀ / √d, causal) v within each document of `docs`, `q` `[batch, heads,
    /// len, head_dim]`, `k`, `v` `[batch, kv_heads, len, head_dim]` (GQA: a KV head serves
    /// `heads / kv_heads` query heads), queries and keys at the same positions: by blocks
    /// of queries ([`crate::attention::forward`]).
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, docs: &Documents) -> FloatTensor<Self> {
        let f = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        crate::attention::forward(f(q), f(k), f(v), docs).into_primitive().tensor()
    }

    /// Causal attention of the last `t` positions (`q` `[batch, heads, t, head_dim]`) over
    /// `k`, `v` (`[batch, kv_heads, keys, head_dim]`, the queries' own positions last; each
    /// KV head serves `heads / kv_heads` query heads): a prefill, a KV cache's earlier
    /// positions in front. `mask` (`[batch, 1, t, keys]`, true = masked) hides padding keys
    /// as well as future ones. By blocks of queries ([`prefill_by_blocks`]).
    fn prefill_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, mask: Option<BoolTensor<Self>>) -> FloatTensor<Self> {
        let f = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        let (q, k, v) = (f(q), f(k), f(v));
        let [b, h, _, _] = q.dims();
        let block = crate::attention::query_block(b, h, k.dims()[2]);
        prefill_by_blocks(q, k, v, mask.map(Tensor::from_primitive), block).into_primitive().tensor()
    }

    /// Gradients of [`Self::causal_attention`] for `q`, `k`, `v` (each of its input's shape)
    /// from its output `out` and the output's gradient ([`crate::attention`]'s blockwise
    /// recomputing backward).
    fn causal_attention_backward(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, out: FloatTensor<Self>, d_out: FloatTensor<Self>, docs: &Documents) -> [FloatTensor<Self>; 3] {
        let f = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        crate::attention::backward(f(q), f(k), f(v), f(out), f(d_out), docs).map(|g| g.into_primitive().tensor())
    }

    /// `lhs · rhs` over the last two dimensions, the leading ones equal ([`crate::matmul`]:
    /// the linear layers', the LM head's and attention's backward products).
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(lhs, rhs)
    }

    /// softmax(s·scale) of a block of attention scores `s` (`[batch, heads, rows, keys]`),
    /// each row over the keys it sees ([`BlockRows`]: its document's up to its position;
    /// GQA packing puts a KV head's query heads as rows of one product), 0 at the others:
    /// the probabilities in `s`'s dtype, computed in f32.
    fn causal_softmax(s: FloatTensor<Self>, rows: &BlockRows<Self>, scale: f64) -> FloatTensor<Self> {
        by_ops::causal_softmax::<Self>(s, rows, scale)
    }

    /// [`Self::causal_softmax`]'s p and the scores' gradient p ∘ (dp − Δ)·scale from the
    /// probabilities' gradient `dp` (as `s`), where Δ = rowsum(dO ∘ O) over the block's
    /// rows of the attention's output `out` and its gradient `d_out` (`[batch, heads, len ·
    /// group, head_dim]`, packed as the scores): both in `s`'s dtype.
    fn causal_softmax_grad(s: FloatTensor<Self>, dp: FloatTensor<Self>, out: FloatTensor<Self>, d_out: FloatTensor<Self>, rows: &BlockRows<Self>, scale: f64) -> [FloatTensor<Self>; 2] {
        by_ops::causal_softmax_grad::<Self>(s, dp, out, d_out, rows, scale)
    }

    /// RMSNorm of each row of `x` (`[rows, n]`, any dtype) with gain `gain` (`[n]`, f32):
    /// f32 ([`crate::norm`]).
    fn rms_norm(x: FloatTensor<Self>, gain: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        by_ops::rms_norm::<Self>(x, gain, eps)
    }

    /// [`Self::rms_norm`]'s gradients of `x` (in its dtype) and of the gain (`[n]`, f32)
    /// from the output's gradient `dy` (f32).
    fn rms_norm_backward(x: FloatTensor<Self>, gain: FloatTensor<Self>, eps: f64, dy: FloatTensor<Self>) -> [FloatTensor<Self>; 2] {
        by_ops::rms_norm_backward::<Self>(x, gain, eps, dy)
    }

    /// silu(gate) ∘ up over `[rows, n]`, in their dtype ([`crate::swiglu`]).
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        by_ops::swiglu::<Self>(gate, up)
    }

    /// [`Self::swiglu`]'s gradients of `gate` and `up` from the output's `d_out`.
    fn swiglu_backward(gate: FloatTensor<Self>, up: FloatTensor<Self>, d_out: FloatTensor<Self>) -> [FloatTensor<Self>; 2] {
        by_ops::swiglu_backward::<Self>(gate, up, d_out)
    }

    /// `sum` (f32, `[batch, heads, len, d]`) with `x` (`[batch, heads, rows, d]`, any
    /// dtype) added to its positions `at..at + rows`: the attention backward's sums over
    /// blocks of queries.
    fn add_rows(sum: FloatTensor<Self>, x: FloatTensor<Self>, at: usize) -> FloatTensor<Self> {
        by_ops::add_rows::<Self>(sum, x, at)
    }

    /// The rows of the embedding `weight` (`[vocab, hidden]`) at `tokens` (`[batch, seq]`):
    /// burn's lookup ([`crate::embedding`]).
    fn token_embedding(weight: FloatTensor<Self>, tokens: IntTensor<Self>) -> FloatTensor<Self> {
        Self::embedding(weight, tokens)
    }

    /// The embedding weight's gradient: `grad` (`[vocab, hidden]`, from the weight's other
    /// uses, a tied LM head) or zeros, with row i of `d_out` (`[n, hidden]`) added to row
    /// `tokens[i]` (`[n]`; a token that recurs adds each of its rows).
    fn embedding_grad(grad: Option<FloatTensor<Self>>, vocab: usize, tokens: IntTensor<Self>, d_out: FloatTensor<Self>) -> FloatTensor<Self> {
        let f = |x| Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(x));
        crate::embedding::grad_by_ops::<Self>(grad.map(f), vocab, Tensor::from_primitive(tokens), f(d_out)).into_primitive().tensor()
    }

    /// Σ x² over every element of `x` (a gradient, for global-norm clipping): `[1]`.
    fn sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let n = x.shape().num_elements();
        let x = Tensor::<Self, 1>::from_primitive(TensorPrimitive::Float(Self::float_reshape(x, [n].into())));
        x.square().sum().into_primitive().tensor()
    }

    /// One AdamW step of an f32 parameter `p` from its gradient `g` and moments `m`, `v`
    /// (all one shape): the new weight and moments ([`crate::adamw`]).
    fn adamw(p: FloatTensor<Self>, g: FloatTensor<Self>, m: FloatTensor<Self>, v: FloatTensor<Self>, step: AdamWStep) -> [FloatTensor<Self>; 3] {
        by_ops::adamw::<Self>(p, g, m, v, step)
    }

    /// softmax over the last dimension (the attention backward's probabilities).
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        burn::tensor::activation::softmax(x, 3).into_primitive().tensor()
    }

    /// `cache` (`[batch, heads, capacity, head_dim]`) with `new` (`[batch, heads, t,
    /// head_dim]`) written over positions `at..at + t`: a KV cache's append.
    fn kv_write(cache: FloatTensor<Self>, new: FloatTensor<Self>, at: usize) -> FloatTensor<Self> {
        kv_write_by_slice_assign::<Self>(cache, new, at)
    }

    /// Attention of one new position (decoding) over a KV cache: `q` `[batch, kv_heads,
    /// n_rep, head_dim]` (the query heads of each KV head as its rows), `k`, `v` `[batch,
    /// kv_heads, capacity, head_dim]` of which the first `filled` positions are written,
    /// `mask` `[batch, 1, 1, capacity]` (true = masked) hiding padding and the spare
    /// capacity. Here over the whole capacity, so that the shapes stay fixed for a block of
    /// steps (on CUDA each new shape is a new autotune).
    fn decode_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, mask: Option<BoolTensor<Self>>, filled: usize) -> FloatTensor<Self> {
        let _ = filled;
        decode_attention_over_capacity::<Self>(q, k, v, mask)
    }

    /// Per row of `z` (`[n, vocab]` f32 logits): log softmax(z) at `targets`, the entropy
    /// of softmax(z) and logsumexp(z), `[n]` each (the LM head's forward, a chunk of rows).
    fn logit_stats(z: FloatTensor<Self>, targets: IntTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (lp, ent, lse) = lm_head::logit_stats_by_ops::<Self>(Tensor::from_primitive(TensorPrimitive::Float(z)), Tensor::from_primitive(targets));
        (lp.into_primitive().tensor(), ent.into_primitive().tensor(), lse.into_primitive().tensor())
    }

    /// g · (onehot(targets) − softmax(z)), `[n, vocab]`, from `z`'s logsumexp `lse` where
    /// the forward kept it (the LM head's backward, a chunk of rows).
    fn logit_grad(z: FloatTensor<Self>, lse: Option<FloatTensor<Self>>, targets: IntTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        let f = |x| Tensor::<Self, 1>::from_primitive(TensorPrimitive::Float(x));
        let z = Tensor::from_primitive(TensorPrimitive::Float(z));
        lm_head::logit_grad_by_ops::<Self>(z, lse.map(f), Tensor::from_primitive(targets), f(g)).into_primitive().tensor()
    }

    /// RoPE: `x * cos + rotate_half(x) * sin` over `x` `[batch, seq, heads, head_dim]` with
    /// `cos`, `sin` `[batch, seq, 1, head_dim]` (their halves equal, as [`crate::rope::Rope`]
    /// makes them).
    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        by_ops::rotary::<Self>(x, cos, sin)
    }

    /// log p(target) and the entropy of p for each row of `hidden` (`[n, hidden]`), p =
    /// softmax(hidden · weight / temperature) (`weight`'s layout: [`Head`]): `([n], [n])`.
    fn token_logprobs(hidden: FloatTensor<Self>, weight: FloatTensor<Self>, targets: IntTensor<Self>, head: Head) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let f = |x| Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(x));
        let (logp, entropy, _) = lm_head::forward(f(hidden), f(weight), Tensor::from_primitive(targets), head);
        (logp.into_primitive().tensor(), entropy.into_primitive().tensor())
    }
}

#[cfg(feature = "flex")]
impl ModelBackend for burn::backend::Flex {
    /// f32: [`flash::forward`] (blocks of queries on every core, each over its document's
    /// keys up to itself: one call for every document, no copies of the inputs); other
    /// dtypes: [`crate::attention::forward`] by head groups.
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, docs: &Documents) -> FloatTensor<Self> {
        if let Some(out) = flash::forward(&q, &k, &v, &flash::document_spans(docs)) {
            return out;
        }
        let f = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        let [out] = flex::by_head_groups([f(q), f(k), f(v)], |[q, k, v]| [crate::attention::forward(q, k, v, docs)]);
        out.into_primitive().tensor()
    }

    /// f32 with left padding (or none): [`flash::forward`] from each row's first key; else
    /// Flex's attention by blocks of queries and groups of heads, the mask sliced with each.
    fn prefill_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, mask: Option<BoolTensor<Self>>) -> FloatTensor<Self> {
        // No mask: no padding; a mask of another pattern: None, burn's attention.
        let (b, t) = (q.layout().shape()[0], q.layout().shape()[2]);
        let first_key = match &mask {
            None => Some(vec![0; b]),
            Some(m) => flex::left_padding(m.clone()),
        };
        let spans = first_key.map(|first| first.iter().map(|&lo| vec![(t, lo)]).collect::<Vec<_>>());
        spans.and_then(|spans| flash::forward(&q, &k, &v, &spans)).unwrap_or_else(|| flex::causal_by_blocks(q, k, v, mask))
    }

    /// A row a task, two passes with the vectorized exp (f32; else burn's ops).
    fn logit_stats(z: FloatTensor<Self>, targets: IntTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [lp, ent, lse] = flex::logit_stats(z, targets);
        (lp, ent, lse)
    }

    /// A row a task, in place (f32; else burn's ops).
    fn logit_grad(z: FloatTensor<Self>, lse: Option<FloatTensor<Self>>, targets: IntTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        flex::logit_grad(z, lse, targets, g)
    }

    /// A (row, position) a pass over its heads (f32; else burn's ops: slices, a cat and
    /// broadcast products, which Flex walks element by element).
    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        flex::rotary(x, cos, sin)
    }

    /// f32: a row a task ([`flex::rms_norm`]); else burn's ops.
    fn rms_norm(x: FloatTensor<Self>, gain: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        flex::rms_norm(x, gain, eps)
    }

    /// f32: blocks of rows a task ([`flex::rms_norm_backward`]); else burn's ops.
    fn rms_norm_backward(x: FloatTensor<Self>, gain: FloatTensor<Self>, eps: f64, dy: FloatTensor<Self>) -> [FloatTensor<Self>; 2] {
        flex::rms_norm_backward(x, gain, eps, dy)
    }

    /// f32: an element at a time on every core with the vectorized exp; else burn's ops.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        flex::swiglu(gate, up)
    }

    fn swiglu_backward(gate: FloatTensor<Self>, up: FloatTensor<Self>, d_out: FloatTensor<Self>) -> [FloatTensor<Self>; 2] {
        flex::swiglu_backward(gate, up, d_out)
    }

    /// f32: in place where the gradient is not shared; zeros from the allocator (pages
    /// the rows never touch stay unmapped).
    fn embedding_grad(grad: Option<FloatTensor<Self>>, vocab: usize, tokens: IntTensor<Self>, d_out: FloatTensor<Self>) -> FloatTensor<Self> {
        flex::embedding_grad(grad, vocab, tokens, d_out)
    }

    /// 2-D f32: gemm into a buffer of our own ([`flex::matmul`]); else Flex's.
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        flex::matmul(lhs, rhs)
    }

    /// f32: blocks on every core, each summed in f32 lanes, the blocks in order in f64
    /// (burn's `square` writes a whole copy first).
    fn sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        flex::sum_of_squares(x)
    }

    /// f32: one pass on every core, in place where the weight and moments are not shared.
    fn adamw(p: FloatTensor<Self>, g: FloatTensor<Self>, m: FloatTensor<Self>, v: FloatTensor<Self>, step: AdamWStep) -> [FloatTensor<Self>; 3] {
        flex::adamw(p, g, m, v, step)
    }

    /// A row a pass, with an exp the compiler vectorizes (Flex's calls libm's, one value
    /// at a time: a tenth of a tiny SFT step).
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        flex::softmax_last(x)
    }

    /// In place when the cache is the only reference to its buffer (Flex's own
    /// slice_assign copies the whole cache first, every step).
    fn kv_write(cache: FloatTensor<Self>, new: FloatTensor<Self>, at: usize) -> FloatTensor<Self> {
        flex::kv_write_in_place(cache, new, at)
    }

    /// Only the filled keys (no spare capacity), read where they lie in the cache (Flex's
    /// attention would first copy the strided slice), a group of (row, KV head) pairs a
    /// core.
    fn decode_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, mask: Option<BoolTensor<Self>>, filled: usize) -> FloatTensor<Self> {
        flex::decode_attention(q, k, v, mask, filled)
    }

    /// f32: [`flash::backward`]; other dtypes: [`crate::attention::backward`] by head groups.
    fn causal_attention_backward(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, out: FloatTensor<Self>, d_out: FloatTensor<Self>, docs: &Documents) -> [FloatTensor<Self>; 3] {
        if let Some(grads) = flash::backward(&q, &k, &v, &out, &d_out, &flash::document_spans(docs)) {
            return grads;
        }
        let f = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        let grads = flex::by_head_groups([f(q), f(k), f(v), f(out), f(d_out)], |[q, k, v, out, d_out]| crate::attention::backward(q, k, v, out, d_out, docs));
        grads.map(|g| g.into_primitive().tensor())
    }
}

/// The defaults of [`ModelBackend`]'s element-wise ops, by burn's ops, which a backend's
/// own kernels may fall back to.
mod by_ops {
    use super::*;

    fn f<B: Backend, const D: usize>(x: FloatTensor<B>) -> Tensor<B, D> {
        Tensor::from_primitive(TensorPrimitive::Float(x))
    }

    pub fn add_rows<B: ModelBackend>(sum: FloatTensor<B>, x: FloatTensor<B>, at: usize) -> FloatTensor<B> {
        let (sum, x) = (f::<B, 4>(sum), f::<B, 4>(x));
        let [b, h, rows, d] = x.dims();
        let range = [0..b, 0..h, at..at + rows, 0..d];
        sum.clone().slice_assign(range.clone(), sum.slice(range) + x.cast(burn::tensor::FloatDType::F32)).into_primitive().tensor()
    }

    pub fn adamw<B: ModelBackend>(p: FloatTensor<B>, g: FloatTensor<B>, m: FloatTensor<B>, v: FloatTensor<B>, s: AdamWStep) -> [FloatTensor<B>; 3] {
        // Element-wise: any shape, as one dimension.
        use burn::tensor::TensorMetadata;
        let shape = p.shape();
        let flat = |x: FloatTensor<B>| f::<B, 1>(B::float_reshape(x, [shape.num_elements()].into()));
        crate::adamw::step_by_ops::<B, 1>(flat(p), flat(g), flat(m), flat(v), s).map(|t| B::float_reshape(t.into_primitive().tensor(), shape.clone()))
    }

    pub fn rms_norm<B: ModelBackend>(x: FloatTensor<B>, gain: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
        crate::norm::forward_by_ops::<B>(f(x), f(gain), eps).into_primitive().tensor()
    }

    pub fn rms_norm_backward<B: ModelBackend>(x: FloatTensor<B>, gain: FloatTensor<B>, eps: f64, dy: FloatTensor<B>) -> [FloatTensor<B>; 2] {
        let (dx, dgain) = crate::norm::backward_by_ops::<B>(f(x), f(gain), eps, f(dy));
        [dx.into_primitive().tensor(), dgain.into_primitive().tensor()]
    }

    pub fn swiglu<B: ModelBackend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
        crate::swiglu::forward_by_ops::<B, 2>(f(gate), f(up)).into_primitive().tensor()
    }

    pub fn swiglu_backward<B: ModelBackend>(gate: FloatTensor<B>, up: FloatTensor<B>, d_out: FloatTensor<B>) -> [FloatTensor<B>; 2] {
        crate::swiglu::backward_by_ops::<B, 2>(f(gate), f(up), f(d_out)).map(|t| t.into_primitive().tensor())
    }

    pub fn rotary<B: ModelBackend>(x: FloatTensor<B>, cos: FloatTensor<B>, sin: FloatTensor<B>) -> FloatTensor<B> {
        crate::rope::apply_rotary::<B>(f(x), f(cos), f(sin)).into_primitive().tensor()
    }

    pub fn causal_softmax<B: ModelBackend>(s: FloatTensor<B>, rows: &BlockRows<B>, scale: f64) -> FloatTensor<B> {
        let s = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(s));
        let dtype = s.dtype();
        crate::attention::causal_softmax_by_ops(s, rows, scale).cast(dtype).into_primitive().tensor()
    }

    pub fn causal_softmax_grad<B: ModelBackend>(s: FloatTensor<B>, dp: FloatTensor<B>, out: FloatTensor<B>, d_out: FloatTensor<B>, rows: &BlockRows<B>, scale: f64) -> [FloatTensor<B>; 2] {
        let f = |x| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
        crate::attention::causal_softmax_grad_by_ops(f(s), f(dp), f(out), f(d_out), rows, scale).map(|x| x.into_primitive().tensor())
    }
}

/// [`ModelBackend::kv_write`] with burn's slice_assign.
fn kv_write_by_slice_assign<B: Backend>(cache: FloatTensor<B>, new: FloatTensor<B>, at: usize) -> FloatTensor<B> {
    let f = |x| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    let (cache, new) = (f(cache), f(new));
    let [b, h, t, d] = new.dims();
    cache.slice_assign([0..b, 0..h, at..at + t, 0..d], new).into_primitive().tensor()
}

/// [`ModelBackend::prefill_attention`]'s default: burn's attention by blocks of `block`
/// queries, each against the keys up to its last query (the mask sliced with it), so that
/// no more than a block's scores exist at once (burn's fallback forms all `t × keys` of a
/// call: 9 GB for an 8B model's 4K-token prompt on 8 rows) and the keys after a block,
/// masked anyway, are left out.
pub fn prefill_by_blocks<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, mask: Option<Tensor<B, 4, Bool>>, block: usize) -> Tensor<B, 4> {
    let [b, h, t, d] = q.dims();
    let [keys, dv] = [k.dims()[2], v.dims()[3]];
    let past = keys - t;
    let n_rep = h / k.dims()[1];
    let (k, v) = (crate::qwen3::repeat_kv(k, n_rep), crate::qwen3::repeat_kv(v, n_rep));
    let float = |x| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    if t <= block {
        let is_causal = mask.is_none();
        return float(burns_attention(q, k, v, mask.map(Tensor::into_primitive), is_causal));
    }
    let blocks = (0..t).step_by(block).map(|start| {
        let (end, seen) = ((start + block).min(t), past + (start + block).min(t));
        let part = |x: &Tensor<B, 4>, rows: std::ops::Range<usize>, w: usize| x.clone().slice([0..b, 0..h, rows, 0..w]);
        let mask = mask.as_ref().map(|m| m.clone().slice([0..b, 0..1, start..end, 0..seen]).into_primitive());
        let is_causal = mask.is_none(); // the block's queries are the last of the keys it sees
        float(burns_attention(part(&q, start..end, d), part(&k, 0..seen, d), part(&v, 0..seen, dv), mask, is_causal))
    });
    Tensor::cat(blocks.collect(), 2)
}

/// [`ModelBackend::decode_attention`] with burn's attention over every key, the mask
/// hiding the spare ones.
fn decode_attention_over_capacity<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>, mask: Option<BoolTensor<B>>) -> FloatTensor<B> {
    let f = |x| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    burns_attention(f(q), f(k), f(v), mask, false)
}

/// burn's attention, `mask` (`[batch, 1, queries, keys]`, true = masked) spread over the
/// heads.
fn burns_attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, mask: Option<BoolTensor<B>>, is_causal: bool) -> FloatTensor<B> {
    let [b, h, t, _] = q.dims();
    let mask = mask.map(|m| Tensor::<B, 4, Bool>::from_primitive(m).expand([b, h, t, k.dims()[2]]));
    let options = AttentionModuleOptions { scale: None, softcap: None, is_causal };
    burn::tensor::module::attention(q, k, v, mask, None, options).into_primitive().tensor()
}

#[cfg(feature = "flex")]
mod flash;
#[cfg(feature = "flex")]
mod flex;

#[cfg(all(feature = "cuda", feature = "fusion"))]
impl ModelBackend for burn::backend::Cuda<f32> {}

/// burn's cubecl backends (CUDA; wgpu for the tests, on lavapipe): each of our kernels
/// where the dtypes are those it reads (say an f32 gradient, a gain in f32); burn's ops
/// otherwise.
#[cfg(any(all(feature = "cuda", not(feature = "fusion")), feature = "wgpu-kernels"))]
impl<R: burn_cubecl::CubeRuntime, I: burn_cubecl::IntElement, BT: burn_cubecl::BoolElement> ModelBackend for burn_cubecl::CubeBackend<R, f32, I, BT> {
    /// On CUDA large bf16/f16 products on a kernel chosen in advance
    /// ([`cuda::pinned_matmul`]), the rest burn's (autotuned in the `autotune` build).
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        #[cfg(all(feature = "cuda", not(feature = "fusion")))]
        let (lhs, rhs) = match cuda::pinned_matmul(lhs, rhs) {
            Ok(out) => return out,
            Err(operands) => operands,
        };
        <Self as burn::tensor::ops::FloatTensorOps<Self>>::float_matmul(lhs, rhs)
    }

    /// A kernel a block ([`kernels::causal_softmax`]) rather than ten of burn's.
    fn causal_softmax(s: FloatTensor<Self>, rows: &BlockRows<Self>, scale: f64) -> FloatTensor<Self> {
        match crate::own_kernels() {
            true => kernels::causal_softmax(s, rows, scale as f32),
            false => by_ops::causal_softmax::<Self>(s, rows, scale),
        }
    }

    /// A kernel a block ([`kernels::causal_softmax_grad`], Δ included) rather than
    /// sixteen of burn's.
    fn causal_softmax_grad(s: FloatTensor<Self>, dp: FloatTensor<Self>, out: FloatTensor<Self>, d_out: FloatTensor<Self>, rows: &BlockRows<Self>, scale: f64) -> [FloatTensor<Self>; 2] {
        match crate::own_kernels() && [&dp, &out, &d_out].iter().all(|t| t.dtype == s.dtype) {
            true => kernels::causal_softmax_grad(s, dp, out, d_out, rows, scale as f32),
            false => by_ops::causal_softmax_grad::<Self>(s, dp, out, d_out, rows, scale),
        }
    }

    fn rms_norm(x: FloatTensor<Self>, gain: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        match crate::own_kernels() && gain.dtype == DType::F32 {
            true => kernels::rms_norm(x, gain, eps as f32),
            false => by_ops::rms_norm::<Self>(x, gain, eps),
        }
    }

    fn rms_norm_backward(x: FloatTensor<Self>, gain: FloatTensor<Self>, eps: f64, dy: FloatTensor<Self>) -> [FloatTensor<Self>; 2] {
        match crate::own_kernels() && gain.dtype == DType::F32 && dy.dtype == DType::F32 {
            true => kernels::rms_norm_backward(x, gain, eps as f32, dy),
            false => by_ops::rms_norm_backward::<Self>(x, gain, eps, dy),
        }
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        match crate::own_kernels() && up.dtype == gate.dtype {
            true => kernels::swiglu(gate, up),
            false => by_ops::swiglu::<Self>(gate, up),
        }
    }

    fn swiglu_backward(gate: FloatTensor<Self>, up: FloatTensor<Self>, d_out: FloatTensor<Self>) -> [FloatTensor<Self>; 2] {
        match crate::own_kernels() && up.dtype == gate.dtype && d_out.dtype == gate.dtype {
            true => kernels::swiglu_backward(gate, up, d_out),
            false => by_ops::swiglu_backward::<Self>(gate, up, d_out),
        }
    }

    /// In place where nothing else holds the sum.
    fn add_rows(sum: FloatTensor<Self>, x: FloatTensor<Self>, at: usize) -> FloatTensor<Self> {
        match crate::own_kernels() && sum.dtype == DType::F32 {
            true => kernels::add_rows(sum, x, at),
            false => by_ops::add_rows::<Self>(sum, x, at),
        }
    }

    fn adamw(p: FloatTensor<Self>, g: FloatTensor<Self>, m: FloatTensor<Self>, v: FloatTensor<Self>, step: AdamWStep) -> [FloatTensor<Self>; 3] {
        match crate::own_kernels() && [&p, &g, &m, &v].iter().all(|t| t.dtype == DType::F32) {
            true => kernels::adamw(p, g, m, v, step),
            false => by_ops::adamw::<Self>(p, g, m, v, step),
        }
    }

    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        match crate::own_kernels() && cos.dtype == x.dtype && sin.dtype == x.dtype {
            true => kernels::rotary(x, cos, sin),
            false => by_ops::rotary::<Self>(x, cos, sin),
        }
    }
}

#[cfg(all(feature = "cuda", not(feature = "fusion")))]
mod cuda;
#[cfg(any(all(feature = "cuda", not(feature = "fusion")), feature = "wgpu-kernels"))]
use burn::tensor::DType;

#[cfg(any(feature = "cuda", feature = "wgpu-kernels"))]
pub mod kernels;

impl<B: ModelBackend, C: CheckpointStrategy> ModelBackend for Autodiff<B, C> {
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::matmul::autodiff::<B, C>(lhs, rhs)
    }

    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, docs: &Documents) -> FloatTensor<Self> {
        crate::attention::autodiff::<B, C>(q, k, v, docs)
    }

    fn token_logprobs(hidden: FloatTensor<Self>, weight: FloatTensor<Self>, targets: IntTensor<Self>, head: Head) -> (FloatTensor<Self>, FloatTensor<Self>) {
        lm_head::autodiff::<B, C>(hidden, weight, targets, head)
    }

    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::rope::autodiff::<B, C>(x, cos, sin)
    }

    fn rms_norm(x: FloatTensor<Self>, gain: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        crate::norm::autodiff::<B, C>(x, gain, eps)
    }

    fn token_embedding(weight: FloatTensor<Self>, tokens: IntTensor<Self>) -> FloatTensor<Self> {
        crate::embedding::autodiff::<B, C>(weight, tokens)
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::swiglu::autodiff::<B, C>(gate, up)
    }
}

/// What training code asks of its backend: autodiff, over a backend the model runs on.
pub trait TrainingBackend: AutodiffBackend<InnerBackend: ModelBackend> + ModelBackend {}
impl<B: AutodiffBackend<InnerBackend: ModelBackend> + ModelBackend> TrainingBackend for B {}
