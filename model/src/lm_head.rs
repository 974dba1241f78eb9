//! Log-probabilities of chosen tokens through the LM head without the `[tokens, vocab]`
//! logits: the forward goes a chunk of rows at a time and keeps only `[tokens]` and the
//! last chunk; under autodiff the backward recomputes each earlier chunk's softmax (a
//! fused linear cross-entropy, as Liger-Kernel's, in tensor ops). At Qwen3's 152K
//! vocabulary a 4096-token sequence's logits are 2.5 GB in f32, kept several times over
//! by autodiff through log-softmax.
use crate::backend::ModelBackend;
use crate::matmul::matmul;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, IndexingUpdateOp, TensorPrimitive};

/// Logits per chunk (256 MB in f32): 441 rows at a 152K vocabulary.
pub const CHUNK_LOGITS: usize = 1 << 26;

/// How the head computes: the logits are `hidden · weight` in `dtype` (as autocast's
/// linear), then f32 divided by `temperature`, `rows` rows at a time. `weight` is
/// `[hidden, vocab]` (a Linear's layout), or `[vocab, hidden]` (an embedding's, for tied
/// heads) when `vocab_major`: gradients come out in the parameter's own layout, since
/// adding a transposed view is a strided walk on CPU.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub temperature: f64,
    pub dtype: FloatDType,
    pub rows: usize,
    pub vocab_major: bool,
}

impl Head {
    /// Chunks of [`CHUNK_LOGITS`] logits for a `vocab`-sized head.
    pub fn new(temperature: f64, dtype: FloatDType, vocab: usize, vocab_major: bool) -> Self {
        Self { temperature, dtype, rows: (CHUNK_LOGITS / vocab).max(1), vocab_major }
    }

    /// `weight` as `[hidden, vocab]` (a view).
    fn hv<B: Backend>(&self, weight: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.vocab_major {
            weight.transpose()
        } else {
            weight
        }
    }

    /// f32 logits of `hidden` (already in `dtype`) against `weight` (in `dtype`).
    fn logits<B: ModelBackend>(&self, hidden: Tensor<B, 2>, weight: Tensor<B, 2>) -> Tensor<B, 2> {
        let z = matmul(hidden, self.hv(weight)).cast(FloatDType::F32);
        if self.temperature == 1.0 {
            z
        } else {
            z.div_scalar(self.temperature)
        }
    }

    /// The rows in as few chunks of at most `self.rows` as hold them, of sizes that differ
    /// by at most one (16384 rows at 441: 6 of 432 and 32 of 431, not 37 of 441 and one
    /// of 67): on CUDA a chunk of another size class would be a matmul autotune of its own
    /// (burn keys them by size rounded up to a power of two).
    fn chunks(&self, n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
        let count = n.div_ceil(self.rows);
        let (base, extra) = (n.checked_div(count).unwrap_or(0), n.checked_rem(count).unwrap_or(0));
        (0..count).map(move |i| {
            let start = i * base + i.min(extra);
            start..start + base + usize::from(i < extra)
        })
    }
}

/// [`ModelBackend::token_logprobs`] on tensors: `hidden` `[n, h]`, `weight` (see [`Head`]),
/// `targets` `[n]`; returns log p(target) and the entropy (not differentiated), `[n]` each.
pub fn token_logprobs<B: ModelBackend>(hidden: Tensor<B, 2>, weight: Tensor<B, 2>, targets: Tensor<B, 1, Int>, head: Head) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let f = |x: Tensor<B, 2>| x.into_primitive().tensor();
    let (logp, entropy) = B::token_logprobs(f(hidden), f(weight), targets.into_primitive(), head);
    let t = |x| Tensor::from_primitive(TensorPrimitive::Float(x));
    (t(logp), t(entropy))
}

/// The forward, chunk by chunk ([`ModelBackend::logit_stats`]); also returns the last
/// chunk's logits and logsumexp, which the backward takes instead of recomputing them (with
/// a single chunk: no recompute at all).
pub(crate) fn forward<B: ModelBackend>(hidden: Tensor<B, 2>, weight: Tensor<B, 2>, targets: Tensor<B, 1, Int>, head: Head) -> (Tensor<B, 1>, Tensor<B, 1>, (Tensor<B, 2>, Tensor<B, 1>)) {
    let weight = weight.cast(head.dtype);
    let (mut logp, mut entropy, mut last) = (vec![], vec![], None);
    for r in head.chunks(hidden.dims()[0]) {
        let z = head.logits(hidden.clone().slice(r.clone()).cast(head.dtype), weight.clone());
        let (lp, ent, lse) = logit_stats(z.clone(), targets.clone().slice(r));
        logp.push(lp);
        entropy.push(ent);
        last = Some((z, lse));
    }
    (Tensor::cat(logp, 0), Tensor::cat(entropy, 0), last.expect("at least one row"))
}

/// [`ModelBackend::logit_stats`] on tensors.
fn logit_stats<B: ModelBackend>(z: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
    let (lp, ent, lse) = B::logit_stats(z.into_primitive().tensor(), targets.into_primitive());
    let t = |x| Tensor::from_primitive(TensorPrimitive::Float(x));
    (t(lp), t(ent), t(lse))
}

/// [`ModelBackend::logit_stats`] in tensor ops: with m = max(z), e = exp(z − m) and
/// s = Σe, log p = z − m − ln s, the entropy −Σ e·log p / s, logsumexp m + ln s.
pub fn logit_stats_by_ops<B: Backend>(z: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
    let max = row_reduce(z.clone(), Tensor::max_dim);
    let shifted = z - max.clone();
    let e = shifted.clone().exp();
    let sum = row_reduce(e.clone(), Tensor::sum_dim);
    let l = shifted - sum.clone().log();
    let logp = l.clone().gather(1, targets.unsqueeze_dim(1)).squeeze_dim(1);
    let entropy = (row_reduce(e * l, Tensor::sum_dim) / sum.clone()).squeeze_dim::<1>(1).neg();
    (logp, entropy, (max + sum.log()).squeeze_dim(1))
}

/// [`ModelBackend::logit_grad`] in tensor ops.
pub fn logit_grad_by_ops<B: Backend>(z: Tensor<B, 2>, lse: Option<Tensor<B, 1>>, targets: Tensor<B, 1, Int>, g: Tensor<B, 1>) -> Tensor<B, 2> {
    let lse = match lse {
        Some(lse) => lse.unsqueeze_dim(1),
        None => {
            let max = row_reduce(z.clone(), Tensor::max_dim);
            max.clone() + row_reduce((z.clone() - max).exp(), Tensor::sum_dim).log()
        }
    };
    let p = (z - lse).exp();
    let g = g.unsqueeze_dim::<2>(1);
    (p * g.clone().neg()).scatter(1, targets.unsqueeze_dim(1), g, IndexingUpdateOp::Add)
}

/// `reduce(x, 1)` (`[n, v]` → `[n, 1]`, a max or a sum) as two narrower reductions when the
/// rows are wide: `[n·s, v/s]` then `[n, s]`, s the largest divisor of v up to 128 that
/// leaves at least 1024 a part. A GPU reduction that gives each row one thread (burn-cuda's
/// without autotune) then has s times the threads: over Qwen3's 152K vocabulary one took
/// 6.6 ms for a chunk's 441 rows on an H200.
pub fn row_reduce<B: Backend>(x: Tensor<B, 2>, reduce: impl Fn(Tensor<B, 2>, usize) -> Tensor<B, 2>) -> Tensor<B, 2> {
    let [n, v] = x.dims();
    let split = (1..=128).rev().find(|s| v % s == 0 && v / s >= 1024).unwrap_or(1);
    if split == 1 {
        return reduce(x, 1);
    }
    reduce(reduce(x.reshape([n * split, v / split]), 1).reshape([n, split]), 1)
}

/// Gradients of Σ g · log p(target) for `hidden` and `weight`: per chunk,
/// dz = g · (onehot(target) − softmax(z)) / temperature ([`ModelBackend::logit_grad`]),
/// dh = dz · weightᵀ, dweight = Σ hᵀ · dz (products in `dtype`, as autocast's linear
/// backward). `last` is the last chunk's logits and logsumexp from the forward.
fn backward<B: ModelBackend>(hidden: Tensor<B, 2>, weight: Tensor<B, 2>, targets: Tensor<B, 1, Int>, head: Head, g: Tensor<B, 1>, last: (Tensor<B, 2>, Tensor<B, 1>)) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let (h_dtype, w_dtype) = (hidden.dtype(), weight.dtype());
    let wd = weight.cast(head.dtype);
    let n = hidden.dims()[0];
    let (mut dh, mut dw, mut last) = (vec![], None, Some(last));
    for r in head.chunks(n) {
        let h = hidden.clone().slice(r.clone()).cast(head.dtype);
        // The last chunk's logits and logsumexp come from the forward; others are recomputed.
        let (z, lse) = match r.end == n {
            true => last.take().map(|(z, lse)| (z, Some(lse))).expect("the last chunk once"),
            false => (head.logits(h.clone(), wd.clone()), None),
        };
        let p = |x: Tensor<B, 2>| x.into_primitive().tensor();
        let dz = B::logit_grad(p(z), lse.map(|l| l.into_primitive().tensor()), targets.clone().slice(r.clone()).into_primitive(), g.clone().slice(r.clone()).into_primitive().tensor());
        let dz = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(dz)).div_scalar(head.temperature).cast(head.dtype);
        dh.push(matmul(dz.clone(), head.hv(wd.clone()).transpose()).cast(h_dtype));
        let part = if head.vocab_major { matmul(dz.transpose(), h) } else { matmul(h.transpose(), dz) }.cast(FloatDType::F32);
        dw = Some(match dw {
            Some(acc) => acc + part,
            None => part,
        });
    }
    (Tensor::cat(dh, 0), dw.expect("at least one row").cast(w_dtype))
}

/// The op under autodiff: the forward on the inner backend; the backward recomputes all
/// chunks but the last. The entropy comes out untracked.
pub(crate) fn autodiff<B: ModelBackend, C: CheckpointStrategy>(
    hidden: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    targets: IntTensor<Autodiff<B, C>>,
    head: Head,
) -> (FloatTensor<Autodiff<B, C>>, FloatTensor<Autodiff<B, C>>) {
    #[derive(Debug)]
    struct Chunked;
    impl<B: ModelBackend> Backward<B, 2> for Chunked {
        type State = (FloatTensor<B>, FloatTensor<B>, IntTensor<B>, Head, (FloatTensor<B>, FloatTensor<B>));

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let t = |x: FloatTensor<B>| Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(x));
            let (hidden, weight, targets, head, (z, lse)) = ops.state;
            let g = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(grads.consume::<B>(&ops.node)));
            let last = (t(z), Tensor::from_primitive(TensorPrimitive::Float(lse)));
            let (dh, dw) = backward(t(hidden), t(weight), Tensor::from_primitive(targets), head, g, last);
            for (parent, g) in ops.parents.into_iter().zip([dh, dw]) {
                if let Some(node) = parent {
                    grads.register::<B>(node.id, g.into_primitive().tensor());
                }
            }
        }
    }
    let t = |x: FloatTensor<B>| Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(x));
    let (logp, entropy, last) = forward(t(hidden.primitive.clone()), t(weight.primitive.clone()), Tensor::from_primitive(targets.clone()), head);
    let (logp, last) = (logp.into_primitive().tensor(), (last.0.into_primitive().tensor(), last.1.into_primitive().tensor()));
    let entropy = <Autodiff<B, C> as AutodiffBackend>::from_inner(entropy.into_primitive().tensor());
    let logp = match Chunked.prepare::<C>([hidden.node.clone(), weight.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((hidden.primitive, weight.primitive, targets, head, last), logp),
        OpsKind::UnTracked(prep) => prep.finish(logp),
    };
    (logp, entropy)
}
