//! The token embedding as an op of its own, for its backward: burn's
//! (`embedding_backward`) makes a zero `[vocab, hidden]` gradient, copies it whole to add
//! the tokens' rows (Flex's `select_add`), and autodiff then adds that to the tied LM
//! head's gradient of the same shape: for Qwen3-0.6B three passes over 622 MB of freshly
//! mapped memory, a fifth of a CPU SFT step at seq 256. Here the rows are added into the
//! gradient the weight already has ([`ModelBackend::embedding_grad`]: on Flex in place),
//! or into zeros when it has none.
use crate::backend::ModelBackend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{TensorMetadata, TensorPrimitive};

/// The rows of `weight` (`[vocab, hidden]`) at `tokens` (`[batch, seq]`): `[batch, seq, hidden]`.
pub fn embedding<B: ModelBackend>(weight: Tensor<B, 2>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    Tensor::from_primitive(TensorPrimitive::Float(B::token_embedding(weight.into_primitive().tensor(), tokens.into_primitive())))
}

/// [`ModelBackend::embedding_grad`] by burn's ops: zeros when there is no gradient yet,
/// then `select_add`.
pub fn grad_by_ops<B: Backend>(grad: Option<Tensor<B, 2>>, vocab: usize, tokens: Tensor<B, 1, Int>, d_out: Tensor<B, 2>) -> Tensor<B, 2> {
    let grad = grad.unwrap_or_else(|| Tensor::zeros([vocab, d_out.dims()[1]], (&d_out.device(), d_out.dtype())));
    grad.select_assign(0, tokens, d_out, burn::tensor::IndexingUpdateOp::Add)
}

/// The embedding under autodiff: the inner backend's lookup; the backward takes the
/// weight's gradient so far out of `grads` (a tied LM head's, whose backward ran first:
/// the lookup is the graph's first op) and adds the rows into it.
pub(crate) fn autodiff<B: ModelBackend, C: CheckpointStrategy>(weight: FloatTensor<Autodiff<B, C>>, tokens: IntTensor<Autodiff<B, C>>) -> FloatTensor<Autodiff<B, C>> {
    #[derive(Debug)]
    struct Lookup;
    impl<B: ModelBackend> Backward<B, 1> for Lookup {
        // The weight (its node, to find its gradient so far) and the tokens, flat.
        type State = (FloatTensor<Autodiff<B>>, IntTensor<B>);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (weight, tokens) = ops.state;
            let d_out = grads.consume::<B>(&ops.node);
            let [node] = ops.parents;
            let Some(node) = node else { return };
            let so_far = grads.remove::<B>(&weight);
            let (vocab, n) = (weight.primitive.shape()[0], tokens.shape()[0]);
            let hidden = d_out.shape().num_elements() / n.max(1);
            let d_out = B::float_reshape(d_out, [n, hidden].into());
            grads.register::<B>(node.id, B::embedding_grad(so_far, vocab, tokens, d_out));
        }
    }
    let [b, t] = tokens.shape().dims();
    let flat = B::int_reshape(tokens.clone(), [b * t].into());
    match Lookup.prepare::<C>([weight.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let out = B::token_embedding(weight.primitive.clone(), tokens);
            prep.finish((weight, flat), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::token_embedding(weight.primitive, tokens)),
    }
}
