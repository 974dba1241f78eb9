//! The backends the model runs on. Two ops get their own autodiff: causal attention
//! ([`crate::attention`]) and the log-probabilities of chosen tokens through the LM head
//! ([`crate::lm_head`]); both recompute in the backward instead of keeping a tensor that
//! grows with length² or with length × vocabulary.
use crate::lm_head::{self, Head};
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor, IntTensor, ModuleOps};
use burn::tensor::TensorPrimitive;

pub trait ModelBackend: Backend {
    /// softmax(q kᵀ / √d, causal) v over `[batch, heads, len, head_dim]`, queries and keys
    /// at the same positions.
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        let causal = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        <Self as ModuleOps<Self>>::attention(q, k, v, None, None, causal)
    }

    /// Gradients of [`Self::causal_attention`] for `q`, `k`, `v` from its output `out` and
    /// the output's gradient ([`crate::attention`]'s blockwise recomputing backward).
    fn causal_attention_backward(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, out: FloatTensor<Self>, d_out: FloatTensor<Self>) -> [FloatTensor<Self>; 3] {
        let f = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        crate::attention::backward(f(q), f(k), f(v), f(out), f(d_out)).map(|g| g.into_primitive().tensor())
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
    /// Flex's attention multiplies every query by every key tile and only then masks the
    /// future (causal rows pay for the whole square): here by blocks of queries, each
    /// against the keys up to its last query (Flex's causal offset aligns the block's
    /// queries to the end of those keys), about half the work on long rows. Flex runs an
    /// attention call on one thread: the heads go in groups, one a core.
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        const BLOCK: usize = 256;
        let causal = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        let f = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        let [out] = flex::by_head_groups([f(q), f(k), f(v)], |[q, k, v]| {
            let [b, h, len, d] = q.dims();
            let dv = v.dims()[3];
            let attend = |q: Tensor<Self, 4>, k: Tensor<Self, 4>, v: Tensor<Self, 4>| {
                f(<Self as ModuleOps<Self>>::attention(q.into_primitive().tensor(), k.into_primitive().tensor(), v.into_primitive().tensor(), None, None, causal))
            };
            if len <= BLOCK {
                return [attend(q, k, v)];
            }
            let blocks = (0..len).step_by(BLOCK).map(|start| {
                let end = (start + BLOCK).min(len);
                let part = |x: &Tensor<Self, 4>, rows: std::ops::Range<usize>, w: usize| x.clone().slice([0..b, 0..h, rows, 0..w]);
                attend(part(&q, start..end, d), part(&k, 0..end, d), part(&v, 0..end, dv))
            });
            [Tensor::cat(blocks.collect(), 2)]
        });
        out.into_primitive().tensor()
    }

    fn causal_attention_backward(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, out: FloatTensor<Self>, d_out: FloatTensor<Self>) -> [FloatTensor<Self>; 3] {
        let f = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        let grads = flex::by_head_groups([f(q), f(k), f(v), f(out), f(d_out)], |[q, k, v, out, d_out]| crate::attention::backward(q, k, v, out, d_out));
        grads.map(|g| g.into_primitive().tensor())
    }
}

/// Flex runs every op but its large matmuls on one thread: work that splits by attention
/// head runs a group of heads a core (each head's numbers are the same either way).
#[cfg(feature = "flex")]
mod flex {
    use burn::backend::Flex;
    use burn::prelude::*;
    use rayon::prelude::*;

    /// `f` on every input's heads (dim 1) in as many groups as rayon has threads (the
    /// inputs' head counts are equal or all divide into the groups, as GQA's K/V heads
    /// follow their query heads), the outputs' groups put back together.
    pub(super) fn by_head_groups<const I: usize, const O: usize>(inputs: [Tensor<Flex, 4>; I], f: impl Fn([Tensor<Flex, 4>; I]) -> [Tensor<Flex, 4>; O] + Sync) -> [Tensor<Flex, 4>; O] {
        let heads = inputs.each_ref().map(|x| x.dims()[1]);
        let groups = (1..=rayon::current_num_threads().min(heads[0])).rev().find(|g| heads.iter().all(|h| h % g == 0)).unwrap_or(1);
        if groups == 1 {
            return f(inputs);
        }
        let group = |i: usize| {
            inputs.each_ref().map(|x| {
                let [b, h, t, d] = x.dims();
                let n = h / groups;
                x.clone().slice([0..b, i * n..(i + 1) * n, 0..t, 0..d])
            })
        };
        let parts: Vec<[Tensor<Flex, 4>; O]> = (0..groups).into_par_iter().map(|i| f(group(i))).collect();
        std::array::from_fn(|o| Tensor::cat(parts.iter().map(|p| p[o].clone()).collect(), 1))
    }
}
#[cfg(feature = "cuda")]
impl ModelBackend for burn::backend::Cuda<f32> {}

impl<B: ModelBackend, C: CheckpointStrategy> ModelBackend for Autodiff<B, C> {
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::attention::autodiff::<B, C>(q, k, v)
    }

    fn token_logprobs(hidden: FloatTensor<Self>, weight: FloatTensor<Self>, targets: IntTensor<Self>, head: Head) -> (FloatTensor<Self>, FloatTensor<Self>) {
        lm_head::autodiff::<B, C>(hidden, weight, targets, head)
    }
}

/// What training code asks of its backend: autodiff, over a backend the model runs on.
pub trait TrainingBackend: AutodiffBackend<InnerBackend: ModelBackend> + ModelBackend {}
impl<B: AutodiffBackend<InnerBackend: ModelBackend> + ModelBackend> TrainingBackend for B {}
