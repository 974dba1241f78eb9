//! The MLP's activation, silu(gate) ∘ up, as an op of its own ([`ModelBackend::swiglu`])
//! with a backward written out: a backend can take it in one kernel each way (CUDA:
//! `backend/kernels.rs`) where burn runs silu as x·sigmoid(x) and differentiates each op.
use crate::backend::ModelBackend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, TensorPrimitive};

/// silu(gate) ∘ up, in their dtype.
pub fn swiglu<B: ModelBackend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    let dims = gate.dims();
    let n = dims[D - 1];
    let rows = |x: Tensor<B, D>| x.reshape([dims.iter().product::<usize>() / n.max(1), n]).into_primitive().tensor();
    Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(B::swiglu(rows(gate), rows(up)))).reshape(dims)
}

/// The forward by burn's ops ([`ModelBackend::swiglu`]'s default).
pub fn forward_by_ops<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    silu(gate) * up
}

/// The gradients of `gate` and `up` (in their dtype, computed in f32) from the output's
/// `d_out`: with s = sigmoid(gate), d gate = d_out ∘ up ∘ s ∘ (1 + gate ∘ (1 − s)) and
/// d up = d_out ∘ gate ∘ s.
pub fn backward_by_ops<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>, d_out: Tensor<B, D>) -> [Tensor<B, D>; 2] {
    let dtype = gate.dtype();
    let wide = |x: Tensor<B, D>| x.cast(FloatDType::F32);
    let (gate, up, d_out) = (wide(gate), wide(up), wide(d_out));
    let s = sigmoid(gate.clone());
    let silu = gate.clone() * s.clone();
    let d_gate = d_out.clone() * up * s.clone() * (gate * (s.neg() + 1.0) + 1.0);
    [d_gate.cast(dtype), (d_out * silu).cast(dtype)]
}

/// silu(gate) ∘ up under autodiff: the inner backend's forward, [`ModelBackend::swiglu_backward`].
pub(crate) fn autodiff<B: ModelBackend, C: CheckpointStrategy>(gate: FloatTensor<Autodiff<B, C>>, up: FloatTensor<Autodiff<B, C>>) -> FloatTensor<Autodiff<B, C>> {
    #[derive(Debug)]
    struct SwiGlu;
    impl<B: ModelBackend> Backward<B, 2> for SwiGlu {
        type State = (FloatTensor<B>, FloatTensor<B>); // gate, up

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (gate, up) = ops.state;
            let d_out = grads.consume::<B>(&ops.node);
            for (parent, g) in ops.parents.into_iter().zip(B::swiglu_backward(gate, up, d_out)) {
                if let Some(node) = parent {
                    grads.register::<B>(node.id, g);
                }
            }
        }
    }
    let out = B::swiglu(gate.primitive.clone(), up.primitive.clone());
    match SwiGlu.prepare::<C>([gate.node.clone(), up.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((gate.primitive, up.primitive), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
