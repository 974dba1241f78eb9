//! AdamW through the model's own op ([`model::adamw`]): one pass a parameter (CUDA: one
//! kernel; Flex: every core, in place) where burn's `AdamW` takes fifteen element-wise
//! ops, the gradient clip's coefficient applied in the same pass. Its arithmetic and its
//! state are burn's (`AdamWState`), so checkpoints written with either load into the other.
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::prelude::*;
use model::adamw::AdamWStep;
use model::ModelBackend;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct AdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// The f32 bits of what the next steps multiply the gradients by (the clip's
    /// coefficient; 1 unclipped): shared, since burn's `OptimizerAdaptor` holds the
    /// optimizer and lends it out only as `&`.
    grad_scale: Arc<AtomicU32>,
}

impl AdamW {
    pub fn new(beta_1: f32, beta_2: f32, eps: f32, weight_decay: f32) -> Self {
        Self { beta_1, beta_2, eps, weight_decay, grad_scale: Arc::new(AtomicU32::new(1f32.to_bits())) }
    }

    /// The gradients of the steps from now on are multiplied by `c` first (the same bits
    /// as scaling them in place before the step, without a pass of its own).
    pub fn scale_gradients(&self, c: f32) {
        self.grad_scale.store(c.to_bits(), Ordering::Relaxed);
    }
}

impl<B: ModelBackend> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(&self, lr: LearningRate, p: Tensor<B, D>, g: Tensor<B, D>, state: Option<Self::State<D>>) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (time, moments) = match state {
            Some(s) => (s.momentum.time + 1, Some((s.momentum.moment_1, s.momentum.moment_2))),
            None => (1, None),
        };
        let scale = f32::from_bits(self.grad_scale.load(Ordering::Relaxed));
        let s = AdamWStep::new(lr, self.beta_1, self.beta_2, self.eps, self.weight_decay, time, scale);
        let [p, m, v] = model::adamw::step(p, g, moments, s);
        (p, Some(AdamWState::new(AdaptiveMomentumState::new(time, m, v))))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device<B>) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
