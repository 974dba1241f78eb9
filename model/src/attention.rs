//! Causal self-attention in O(length) memory. The forward and the backward both go a block
//! of queries at a time: the block's scores against the keys from the first document start
//! it sees up to its last query (the keys outside are all masked and left out; packed
//! documents of all rows go in one call, each query masked to its own), an f32 softmax,
//! products in the inputs' dtype through [`crate::matmul`] (on a GPU bf16 tensor cores, on
//! the kernel the backend picks). Under autodiff the backward recomputes each block's probabilities from the
//! saved q, k, v and output, so no len² tensor outlives a block; burn 0.21's autodiff
//! attention keeps the len² scores and probabilities of every layer until the backward,
//! and its forward (burn-cuda's: the unfused fallback, which autotune picked on the H200)
//! forms all len² scores of a call at once, the future half too, and takes its softmax in
//! the inputs' dtype. On a CPU, f32 training has kernels of its own (`backend/flash.rs`).
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use crate::backend::ModelBackend;
use crate::matmul::matmul;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, TensorPrimitive};

fn float<B: Backend>(x: FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// Queries per block: a block's scores and probabilities, `[batch, heads, block, keys]`
/// each in f32, kept under 1 GiB (512 queries up to 8192 keys at 32 heads, fewer for
/// longer rows: 128 at 32768), between 64 and 512.
pub fn query_block(batch: usize, heads: usize, keys: usize) -> usize {
    const BUDGET: usize = 1 << 30;
    (BUDGET / (batch * heads * keys * 8).max(1)).clamp(64, 512)
}

/// The scores `q kᵀ` (in the inputs' dtype) of a block of packed queries (`qb`) over the
/// keys up to its last query (`kb`).
fn block_scores<B: ModelBackend>(qb: Tensor<B, 4>, kb: Tensor<B, 4>) -> FloatTensor<B> {
    matmul(qb, kb.swap_dims(2, 3)).into_primitive().tensor()
}

/// Which keys the rows of a block of packed scores (`[batch, kv_heads, rows, keys]`) see:
/// row i is the query at position (start + i) / group ([`pack`]), which in batch row r sees
/// keys `first[r, position] ..= position` (its own document's, up to itself); the block's
/// scores begin at key `key0`.
#[derive(Clone, Debug)]
pub struct BlockRows<B: Backend> {
    pub start: usize,
    pub group: usize,
    pub key0: usize,
    /// `[batch, len]`: each position's first visible key.
    pub first: IntTensor<B>,
}

/// Each position's first visible key (its document's start), for every row of a call,
/// kept on the host for the blocks' key ranges and on the device for the softmax.
struct FirstKeys<B: Backend> {
    host: Vec<Vec<usize>>,
    device: IntTensor<B>,
}

impl<B: Backend> FirstKeys<B> {
    fn new(docs: &Documents, len: usize, device: &B::Device) -> Self {
        let host: Vec<Vec<usize>> = docs.iter().map(|lens| {
            assert_eq!(lens.iter().sum::<usize>(), len, "documents {lens:?} do not fill a row of {len}");
            lens.iter().scan(0, |at, &n| { *at += n; Some(std::iter::repeat_n(*at - n, n)) }).flatten().collect()
        }).collect();
        let flat = host.iter().flatten().map(|&k| k as i64).collect();
        let device = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [host.len(), len]), device).into_primitive();
        FirstKeys { host, device }
    }

    /// The block of queries `start..` (positions): its keys from the first that any of its
    /// rows sees, rounded down to 64 (whole tiles for the products).
    fn block(&self, start: usize, group: usize) -> BlockRows<B> {
        let key0 = self.host.iter().map(|row| row[start]).min().unwrap_or(0) / 64 * 64;
        BlockRows { start: start * group, group, key0, first: self.device.clone() }
    }
}

/// softmax(s·scale) in f32 over a block of scores `s` (`[batch, heads, rows, keys]`, any
/// dtype), each row over the keys it sees ([`BlockRows`]), the others 0: burn's ops
/// ([`ModelBackend::causal_softmax`]'s default).
pub fn causal_softmax_by_ops<B: ModelBackend>(s: Tensor<B, 4>, rows: &BlockRows<B>, scale: f64) -> Tensor<B, 4> {
    let [b, h, n, keys] = s.dims();
    let device = s.device();
    let position = Tensor::<B, 1, Int>::arange(rows.start as i64..(rows.start + n) as i64, &device).div_scalar(rows.group as i64);
    let first = Tensor::<B, 2, Int>::from_primitive(rows.first.clone()).select(1, position.clone());
    let key = Tensor::<B, 1, Int>::arange(rows.key0 as i64..(rows.key0 + keys) as i64, &device).reshape([1, 1, keys]).expand([b, n, keys]);
    let future = key.clone().greater(position.reshape([1, n, 1]).expand([b, n, keys]));
    let hidden = future.bool_or(key.lower(first.reshape([b, n, 1]).expand([b, n, keys])));
    let s = s.cast(FloatDType::F32).mul_scalar(scale);
    let s = s.mask_fill(hidden.unsqueeze_dim::<4>(1).expand([b, h, n, keys]), f32::NEG_INFINITY);
    Tensor::from_primitive(TensorPrimitive::Float(B::softmax_last(s.into_primitive().tensor())))
}

/// [`ModelBackend::causal_softmax_grad`] by burn's ops: p and p ∘ (dp − Δ)·scale, both in
/// the scores' dtype, the arithmetic in f32; Δ = rowsum(dO ∘ O) over the block's rows of
/// `out` and `d_out` (packed as the scores).
pub fn causal_softmax_grad_by_ops<B: ModelBackend>(s: Tensor<B, 4>, dp: Tensor<B, 4>, out: Tensor<B, 4>, d_out: Tensor<B, 4>, rows: &BlockRows<B>, scale: f64) -> [Tensor<B, 4>; 2] {
    let dtype = s.dtype();
    let [b, h, n, _] = s.dims();
    let block = [0..b, 0..h, rows.start..rows.start + n, 0..out.dims()[3]];
    // Per block, so Δ is contiguous: a slice of a whole-length Δ broadcast against the
    // block's scores would take Flex's scalar strided path (12% of a tiny SFT step).
    let wide = |x: Tensor<B, 4>| x.slice(block.clone()).cast(FloatDType::F32);
    let delta = (wide(d_out) * wide(out)).sum_dim(3);
    let p = causal_softmax_by_ops(s, rows, scale);
    let ds = (p.clone() * (dp.cast(FloatDType::F32) - delta)).mul_scalar(scale);
    [p.cast(dtype), ds.cast(dtype)]
}

/// `x` stored in its `[batch, heads, len, head_dim]` order: the model's q, k and v are
/// views with heads and positions swapped, which a GPU's TMA matmul cannot read and burn's
/// matmul copies for every product, a block's worth each time. One copy here instead; none
/// when `x` is already so (the reshapes then only relabel).
fn in_order<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, t, d] = x.dims();
    x.reshape([b * h, t, d]).reshape([b, h, t, d])
}

/// Query-shaped `x` (`[batch, heads, len, head_dim]`, a KV head's `group` query heads
/// consecutive) as `[batch, heads / group, len · group, head_dim]`, row `i · group + g`
/// being query head g at position i: the query heads of a KV head as the rows of one
/// product with its keys (FlashAttention's GQA packing: no repeated K and V, and a block of
/// positions is a run of rows). One copy, in order.
fn pack<B: Backend>(x: Tensor<B, 4>, group: usize) -> Tensor<B, 4> {
    let [b, h, t, d] = x.dims();
    in_order(x.reshape([b, h / group, group, t, d]).swap_dims(2, 3).reshape([b, h / group, t * group, d]))
}

/// [`pack`] undone: `[batch, heads, len, head_dim]`, a view of `[batch, len, heads,
/// head_dim]` as the model's q (whose output projection then reads it with no copy).
fn unpack<B: Backend>(x: Tensor<B, 4>, group: usize) -> Tensor<B, 4> {
    let [b, kv_heads, rows, d] = x.dims();
    let t = rows / group;
    x.reshape([b, kv_heads, t, group, d]).swap_dims(1, 2).reshape([b, t, kv_heads * group, d]).swap_dims(1, 2)
}

/// Each row's document lengths, in order, summing to its length: packed sequences, a query
/// seeing the keys of its own document up to itself (one document a row: causal).
pub type Documents = [Vec<usize>];

/// Causal attention within each document (`docs`) of `q` (`[batch, heads, len,
/// head_dim]`) over `k`, `v` (`[batch, kv_heads, len, head_dim]`, the same positions; a KV
/// head serves `heads / kv_heads` query heads) by blocks of queries ([`query_block`]), each
/// over the keys from the first that one of its queries sees ([`BlockRows`]): one call for
/// all rows and documents. The output in the inputs' dtype.
pub fn forward<B: ModelBackend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, docs: &Documents) -> Tensor<B, 4> {
    let [b, h, len, d] = q.dims();
    let kv_heads = k.dims()[1];
    if len == 0 {
        return q; // as empty as the output
    }
    let group = h / kv_heads;
    let first = FirstKeys::<B>::new(docs, len, &q.device());
    let (q, k, v) = (pack(q, group), in_order(k), in_order(v));
    let scale = 1.0 / (d as f64).sqrt();
    let block = query_block(b, h, len);
    let blocks = (0..len).step_by(block).map(|start| {
        let end = (start + block).min(len);
        let rows = first.block(start, group);
        let keys = [0..b, 0..kv_heads, rows.key0..end, 0..d];
        let s = block_scores(q.clone().slice([0..b, 0..kv_heads, start * group..end * group, 0..d]), k.clone().slice(keys.clone()));
        matmul(float(B::causal_softmax(s, &rows, scale)), v.clone().slice(keys))
    });
    unpack(Tensor::cat(blocks.collect(), 2), group)
}

/// [`ModelBackend::causal_attention`] on tensors.
pub fn causal_attention<B: ModelBackend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, docs: &Documents) -> Tensor<B, 4> {
    let p = |t: Tensor<B, 4>| t.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::causal_attention(p(q), p(k), p(v), docs)))
}

/// Causal attention under autodiff: the inner backend's forward, the lean backward, the
/// documents kept with the op.
pub(crate) fn autodiff<B: ModelBackend, C: CheckpointStrategy>(q: FloatTensor<Autodiff<B, C>>, k: FloatTensor<Autodiff<B, C>>, v: FloatTensor<Autodiff<B, C>>, docs: &Documents) -> FloatTensor<Autodiff<B, C>> {
    #[derive(Debug)]
    struct Lean(Vec<Vec<usize>>);
    impl<B: ModelBackend> Backward<B, 3> for Lean {
        type State = [FloatTensor<B>; 4]; // q, k, v, output

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [q, k, v, out] = ops.state;
            let d_out = grads.consume::<B>(&ops.node);
            for (parent, g) in ops.parents.into_iter().zip(B::causal_attention_backward(q, k, v, out, d_out, &self.0)) {
                if let Some(node) = parent {
                    grads.register::<B>(node.id, g);
                }
            }
        }
    }
    match Lean(docs.to_vec()).prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let out = B::causal_attention(q.primitive.clone(), k.primitive.clone(), v.primitive.clone(), docs);
            prep.finish([q.primitive, k.primitive, v.primitive, out.clone()], out)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::causal_attention(q.primitive, k.primitive, v.primitive, docs)),
    }
}

/// Gradients of causal attention (FlashAttention-2's backward, by blocks of queries): with
/// P = softmax(S), S = q kᵀ·s and Δ = rowsum(dO ∘ O), dV = Pᵀ dO, dS = P ∘ (dO vᵀ − Δ)·s
/// (the scale folded in where dS is formed, not in a pass over dQ and dK), dQ = dS k,
/// dK = dSᵀ q. The products run in the inputs' dtype (bf16 on a GPU: tensor
/// cores, f32 accumulation inside the kernel; an f32 product there is several times
/// slower) and the softmax, its gradient and the sums over blocks in f32, as FlashAttention
/// does; transformers' eager attention keeps even dS in bf16. With GQA (`k`, `v` with
/// fewer heads, as [`forward`]'s) the queries are packed as the forward's, so the products
/// sum dK and dV over each KV head's query heads themselves. Documents and key ranges as
/// [`forward`]'s.
pub fn backward<B: ModelBackend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, out: Tensor<B, 4>, d_out: Tensor<B, 4>, docs: &Documents) -> [Tensor<B, 4>; 3] {
    let [b, h, len, d] = q.dims();
    let kv_heads = k.dims()[1];
    if len == 0 {
        return [q, k, v]; // as empty as the gradients
    }
    let group = h / kv_heads;
    let first = FirstKeys::<B>::new(docs, len, &q.device());
    let [q, out, d_out] = [q, out, d_out].map(|x| pack(x, group));
    let (k, v) = (in_order(k), in_order(v));
    let dtype = q.dtype();
    let scale = 1.0 / (d as f64).sqrt();
    let device = q.device();
    let zeros = |rows: usize| Tensor::<B, 4>::zeros([b, kv_heads, rows, d], &device).into_primitive().tensor();
    let (mut dq, mut dk, mut dv) = (zeros(len * group), zeros(len), zeros(len));
    // Each block's products added into the f32 sums where they belong (one op: on a GPU
    // one kernel, in place, for a cast, a slice, an add and a slice_assign).
    let add = |sum: FloatTensor<B>, x: Tensor<B, 4>, at: usize| B::add_rows(sum, x.into_primitive().tensor(), at);
    let block = query_block(b, h, len);
    for start in (0..len).step_by(block) {
        let end = (start + block).min(len);
        let block_rows = first.block(start, group);
        let key0 = block_rows.key0;
        let (rows, keys) = ([0..b, 0..kv_heads, start * group..end * group, 0..d], [0..b, 0..kv_heads, key0..end, 0..d]);
        let (qb, ob) = (q.clone().slice(rows.clone()), d_out.clone().slice(rows));
        let (kb, vb) = (k.clone().slice(keys.clone()), v.clone().slice(keys));
        let dp = matmul(ob.clone(), vb.swap_dims(2, 3)).into_primitive().tensor();
        let (o, g) = (out.clone().into_primitive().tensor(), d_out.clone().into_primitive().tensor());
        let [p, ds] = B::causal_softmax_grad(block_scores(qb.clone(), kb.clone()), dp, o, g, &block_rows, scale).map(float);
        dv = add(dv, matmul(p.swap_dims(2, 3), ob), key0);
        dq = add(dq, matmul(ds.clone(), kb), start * group);
        dk = add(dk, matmul(ds.swap_dims(2, 3), qb), key0);
    }
    [unpack(float(dq).cast(dtype), group), float(dk).cast(dtype), float(dv).cast(dtype)]
}
