//! Log-probabilities of chosen tokens through the LM head without the `[tokens, vocab]`
//! logits: the forward goes a chunk of rows at a time and keeps only `[tokens]`; under
//! autodiff the backward recomputes each chunk's softmax (a fused linear cross-entropy,
//! as Liger-Kernel's, in tensor ops). At Qwen3's 152K vocabulary a 4096-token sequence's
//! logits are 2.5 GB in f32, kept several times over by autodiff through log-softmax.
use crate::backend::ModelBackend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, IndexingUpdateOp, TensorPrimitive};

/// Logits per chunk (256 MB in f32): 441 rows at a 152K vocabulary.
pub const CHUNK_LOGITS: usize = 1 << 26;

/// How the head computes: the logits are `(hidden · weight)` in `dtype` (as autocast's
/// linear), then f32 divided by `temperature`, `rows` rows at a time.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub temperature: f64,
    pub dtype: FloatDType,
    pub rows: usize,
}

impl Head {
    /// Chunks of [`CHUNK_LOGITS`] logits for a `vocab`-sized head.
    pub fn new(temperature: f64, dtype: FloatDType, vocab: usize) -> Self {
        Self { temperature, dtype, rows: (CHUNK_LOGITS / vocab).max(1) }
    }

    /// f32 logits of `hidden` (already in `dtype`) against `weight` (in `dtype`).
    fn logits<B: Backend>(&self, hidden: Tensor<B, 2>, weight: Tensor<B, 2>) -> Tensor<B, 2> {
        let z = hidden.matmul(weight).cast(FloatDType::F32);
        if self.temperature == 1.0 {
            z
        } else {
            z.div_scalar(self.temperature)
        }
    }

    fn chunks(&self, n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
        let rows = self.rows;
        (0..n).step_by(rows).map(move |s| s..(s + rows).min(n))
    }
}

/// [`ModelBackend::token_logprobs`] on tensors: `hidden` `[n, h]`, `weight` `[h, vocab]`,
/// `targets` `[n]`; returns log p(target) and the entropy (not differentiated), `[n]` each.
pub fn token_logprobs<B: ModelBackend>(hidden: Tensor<B, 2>, weight: Tensor<B, 2>, targets: Tensor<B, 1, Int>, head: Head) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let f = |x: Tensor<B, 2>| x.into_primitive().tensor();
    let (logp, entropy) = B::token_logprobs(f(hidden), f(weight), targets.into_primitive(), head);
    let t = |x| Tensor::from_primitive(TensorPrimitive::Float(x));
    (t(logp), t(entropy))
}

/// The forward, chunk by chunk.
pub(crate) fn forward<B: Backend>(hidden: Tensor<B, 2>, weight: Tensor<B, 2>, targets: Tensor<B, 1, Int>, head: Head) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let weight = weight.cast(head.dtype);
    let (mut logp, mut entropy) = (vec![], vec![]);
    for r in head.chunks(hidden.dims()[0]) {
        let l = log_softmax(head.logits(hidden.clone().slice(r.clone()).cast(head.dtype), weight.clone()), 1);
        logp.push(l.clone().gather(1, targets.clone().slice(r).unsqueeze_dim(1)).squeeze_dim(1));
        entropy.push((l.clone().exp() * l).sum_dim(1).squeeze_dim::<1>(1).neg());
    }
    (Tensor::cat(logp, 0), Tensor::cat(entropy, 0))
}

/// Gradients of Σ g · log p(target) for `hidden` and `weight`: per chunk,
/// dz = g · (onehot(target) − softmax(z)) / temperature, dh = dz · weightᵀ,
/// dweight = Σ hᵀ · dz (products in `dtype`, as autocast's linear backward).
fn backward<B: Backend>(hidden: Tensor<B, 2>, weight: Tensor<B, 2>, targets: Tensor<B, 1, Int>, head: Head, g: Tensor<B, 1>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let (h_dtype, w_dtype) = (hidden.dtype(), weight.dtype());
    let wd = weight.cast(head.dtype);
    let mut dh = vec![];
    let mut dw = Tensor::<B, 2>::zeros(wd.dims(), &wd.device());
    for r in head.chunks(hidden.dims()[0]) {
        let h = hidden.clone().slice(r.clone()).cast(head.dtype);
        let p = softmax(head.logits(h.clone(), wd.clone()), 1);
        let g = g.clone().slice(r.clone()).unsqueeze_dim::<2>(1);
        let dz = (p * g.clone().neg()).scatter(1, targets.clone().slice(r).unsqueeze_dim(1), g, IndexingUpdateOp::Add);
        let dz = dz.div_scalar(head.temperature).cast(head.dtype);
        dh.push(dz.clone().matmul(wd.clone().transpose()).cast(h_dtype));
        dw = dw + h.transpose().matmul(dz).cast(FloatDType::F32);
    }
    (Tensor::cat(dh, 0), dw.cast(w_dtype))
}

/// The op under autodiff: the inner backend's forward; the backward recomputes by chunks.
/// The entropy comes out untracked.
pub(crate) fn autodiff<B: ModelBackend, C: CheckpointStrategy>(
    hidden: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    targets: IntTensor<Autodiff<B, C>>,
    head: Head,
) -> (FloatTensor<Autodiff<B, C>>, FloatTensor<Autodiff<B, C>>) {
    #[derive(Debug)]
    struct Chunked;
    impl<B: Backend> Backward<B, 2> for Chunked {
        type State = (FloatTensor<B>, FloatTensor<B>, IntTensor<B>, Head);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let t = |x: FloatTensor<B>| Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(x));
            let (hidden, weight, targets, head) = ops.state;
            let g = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(grads.consume::<B>(&ops.node)));
            let (dh, dw) = backward(t(hidden), t(weight), Tensor::from_primitive(targets), head, g);
            for (parent, g) in ops.parents.into_iter().zip([dh, dw]) {
                if let Some(node) = parent {
                    grads.register::<B>(node.id, g.into_primitive().tensor());
                }
            }
        }
    }
    let (logp, entropy) = B::token_logprobs(hidden.primitive.clone(), weight.primitive.clone(), targets.clone(), head);
    let entropy = <Autodiff<B, C> as AutodiffBackend>::from_inner(entropy);
    let logp = match Chunked.prepare::<C>([hidden.node.clone(), weight.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((hidden.primitive, weight.primitive, targets, head), logp),
        OpsKind::UnTracked(prep) => prep.finish(logp),
    };
    (logp, entropy)
}
