//! RMSNorm as an op of its own ([`ModelBackend::rms_norm`]) with a backward written out,
//! so that a backend can take a row in one kernel each way (CUDA: `backend/kernels.rs`)
//! where burn's autodiff runs some twenty element-wise ops and reductions through the
//! graph of `x / sqrt(mean(x²) + ε) · γ`. In f32 whatever the input's dtype
//! (Qwen3RMSNorm's upcast); the backward keeps only `x` and `γ`.
use crate::backend::ModelBackend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, TensorPrimitive};

/// RMSNorm over the last dimension of `x` with gain `gain` (`[n]`): f32.
pub fn rms_norm<B: ModelBackend, const D: usize>(x: Tensor<B, D>, gain: Tensor<B, 1>, eps: f64) -> Tensor<B, D> {
    let dims = x.dims();
    let n = dims[D - 1];
    let x = x.reshape([dims.iter().product::<usize>() / n.max(1), n]);
    let gain = if gain.dtype() == FloatDType::F32.into() { gain } else { gain.cast(FloatDType::F32) };
    let y = B::rms_norm(x.into_primitive().tensor(), gain.into_primitive().tensor(), eps);
    Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(y)).reshape(dims)
}

/// The forward by burn's ops on `[rows, n]` ([`ModelBackend::rms_norm`]'s default).
pub fn forward_by_ops<B: Backend>(x: Tensor<B, 2>, gain: Tensor<B, 1>, eps: f64) -> Tensor<B, 2> {
    let x = x.cast(FloatDType::F32);
    let rms = (x.clone().square().mean_dim(1) + eps).sqrt();
    (x / rms) * gain.unsqueeze()
}

/// The gradients of `x` (in its dtype) and of the gain (f32) from the output's `dy`: with
/// r = 1/rms and x̂ = x·r, dx = r·(g − x̂·mean(g ∘ x̂)) where g = dy ∘ γ, and dγ = Σ_rows dy ∘ x̂.
pub fn backward_by_ops<B: Backend>(x: Tensor<B, 2>, gain: Tensor<B, 1>, eps: f64, dy: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let dtype = x.dtype();
    let x = x.cast(FloatDType::F32);
    let rms = (x.clone().square().mean_dim(1) + eps).sqrt();
    let xhat = x / rms.clone();
    let g = dy.clone() * gain.unsqueeze();
    let dot = (g.clone() * xhat.clone()).mean_dim(1);
    let dx = (g - xhat.clone() * dot) / rms;
    (dx.cast(dtype), (dy * xhat).sum_dim(0).squeeze_dim(0))
}

/// RMSNorm under autodiff: the inner backend's forward, [`ModelBackend::rms_norm_backward`].
pub(crate) fn autodiff<B: ModelBackend, C: CheckpointStrategy>(x: FloatTensor<Autodiff<B, C>>, gain: FloatTensor<Autodiff<B, C>>, eps: f64) -> FloatTensor<Autodiff<B, C>> {
    #[derive(Debug)]
    struct Norm(f64);
    impl<B: ModelBackend> Backward<B, 2> for Norm {
        type State = (FloatTensor<B>, FloatTensor<B>); // x, gain

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, gain) = ops.state;
            let dy = grads.consume::<B>(&ops.node);
            let [dx, dgain] = B::rms_norm_backward(x, gain, self.0, dy);
            let [x_node, gain_node] = ops.parents;
            if let Some(node) = x_node {
                grads.register::<B>(node.id, dx);
            }
            if let Some(node) = gain_node {
                grads.register::<B>(node.id, dgain);
            }
        }
    }
    let out = B::rms_norm(x.primitive.clone(), gain.primitive.clone(), eps);
    match Norm(eps).prepare::<C>([x.node.clone(), gain.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((x.primitive, gain.primitive), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
