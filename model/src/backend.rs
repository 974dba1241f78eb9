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
    /// queries to the end of those keys), about half the work on long rows.
    fn causal_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        const BLOCK: usize = 256;
        let causal = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        let f = |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x));
        let (q, k, v) = (f(q), f(k), f(v));
        let [b, h, len, d] = q.dims();
        let dv = v.dims()[3];
        if len <= BLOCK {
            return <Self as ModuleOps<Self>>::attention(q.into_primitive().tensor(), k.into_primitive().tensor(), v.into_primitive().tensor(), None, None, causal);
        }
        let blocks = (0..len).step_by(BLOCK).map(|start| {
            let end = (start + BLOCK).min(len);
            let part = |x: &Tensor<Self, 4>, rows: std::ops::Range<usize>, w: usize| x.clone().slice([0..b, 0..h, rows, 0..w]).into_primitive().tensor();
            f(<Self as ModuleOps<Self>>::attention(part(&q, start..end, d), part(&k, 0..end, d), part(&v, 0..end, dv), None, None, causal))
        });
        Tensor::cat(blocks.collect(), 2).into_primitive().tensor()
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
