//! The products of the decoder's linear layers, the LM head and attention's backward as an
//! op of their own ([`ModelBackend::matmul`]), so that a backend can choose their kernel:
//! burn-cuda otherwise autotunes every shape on first use (minutes of compiles on a fresh
//! machine) or, without autotune, runs one general kernel several times slower than the
//! one autotune picks for these shapes on Hopper.
use crate::backend::ModelBackend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorPrimitive;

/// `lhs · rhs` over the last two dimensions, the leading ones equal (no broadcasting).
pub fn matmul<B: ModelBackend, const D: usize>(lhs: Tensor<B, D>, rhs: Tensor<B, D>) -> Tensor<B, D> {
    debug_assert_eq!(lhs.dims()[..D - 2], rhs.dims()[..D - 2], "matmul: batch dimensions differ");
    Tensor::from_primitive(TensorPrimitive::Float(B::matmul(lhs.into_primitive().tensor(), rhs.into_primitive().tensor())))
}

/// A linear layer's product: `x` `[.., in]` times `weight` `[in, out]`, as one 2-D product.
pub fn linear<B: ModelBackend, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 2>) -> Tensor<B, D> {
    let mut dims = x.dims();
    let [inputs, outputs] = weight.dims();
    let rows = dims[..D - 1].iter().product();
    dims[D - 1] = outputs;
    matmul(x.reshape([rows, inputs]), weight).reshape(dims)
}

/// Under autodiff: d lhs = g · rhsᵀ, d rhs = lhsᵀ · g, both through the inner backend's
/// op. The operands are checkpointed as burn's own matmul does, so that gradient
/// checkpointing recomputes them rather than keeping them.
pub(crate) fn autodiff<B: ModelBackend, C: CheckpointStrategy>(lhs: FloatTensor<Autodiff<B, C>>, rhs: FloatTensor<Autodiff<B, C>>) -> FloatTensor<Autodiff<B, C>> {
    #[derive(Debug)]
    struct Product;
    impl<B: ModelBackend> Backward<B, 2> for Product {
        type State = (Option<NodeId>, Option<NodeId>); // each operand, when the other takes a gradient

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
            let (lhs, rhs) = ops.state;
            let (lhs, rhs) = (lhs.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id)), rhs.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id)));
            let g = grads.consume::<B>(&ops.node);
            let [lhs_node, rhs_node] = ops.parents;
            if let (Some(node), Some(rhs)) = (lhs_node, rhs) {
                grads.register::<B>(node.id, B::matmul(g.clone(), B::float_transpose(rhs)));
            }
            if let (Some(node), Some(lhs)) = (rhs_node, lhs) {
                grads.register::<B>(node.id, B::matmul(B::float_transpose(lhs), g));
            }
        }
    }
    let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
    match Product.prepare::<C>([lhs.node.clone(), rhs.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let state = (rhs_tracked.then(|| prep.checkpoint(&lhs)), lhs_tracked.then(|| prep.checkpoint(&rhs)));
            prep.finish(state, B::matmul(lhs.primitive, rhs.primitive))
        }
        OpsKind::UnTracked(prep) => prep.finish(B::matmul(lhs.primitive, rhs.primitive)),
    }
}
