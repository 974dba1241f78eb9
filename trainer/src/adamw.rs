//! AdamW through the model's own op ([`model::adamw`]): one pass a parameter (CUDA: one
//! kernel; Flex: every core, in place) where burn's `AdamW` takes fifteen element-wise
//! ops. Its arithmetic and its state are burn's (`AdamWState`), so checkpoints written
//! with either load into the other.
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::prelude::*;
use model::adamw::AdamWStep;
use model::ModelBackend;

#[derive(Debug, Clone, Copy)]
pub struct AdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl<B: ModelBackend> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(&self, lr: LearningRate, p: Tensor<B, D>, g: Tensor<B, D>, state: Option<Self::State<D>>) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (time, moments) = match state {
            Some(s) => (s.momentum.time + 1, Some((s.momentum.moment_1, s.momentum.moment_2))),
            None => (1, None),
        };
        let s = AdamWStep::new(lr, self.beta_1, self.beta_2, self.eps, self.weight_decay, time);
        let [p, m, v] = model::adamw::step(p, g, moments, s);
        (p, Some(AdamWState::new(AdaptiveMomentumState::new(time, m, v))))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device<B>) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
