//! One AdamW step of a parameter as an op of its own ([`ModelBackend::adamw`]): burn's
//! `AdamW` runs it as fifteen element-wise ops a parameter, each a pass through memory
//! (and on CUDA a launch), where a backend can take it in one pass: read the weight, its
//! gradient and moments, write the three back. The arithmetic is burn's, constants and
//! all in f32, so that a run's optimizer state and checkpoints are the same either way.
use crate::backend::ModelBackend;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorPrimitive;

/// The constants of one step, as burn's `AdamW` computes them (in f32, but 1 − lr·wd in
/// f64 first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub eps: f32,
    /// 1 − lr·weight_decay: what the weight keeps before the update.
    pub keep: f32,
    /// The bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ of step `t` (from 1).
    pub bias_1: f32,
    pub bias_2: f32,
    /// What the gradient is multiplied by first: the clip's coefficient (as
    /// `clip_grad_norm_` scales the gradients in place before the step), 1 when unclipped.
    /// Here rather than a pass of its own over every gradient.
    pub grad_scale: f32,
}

impl AdamWStep {
    pub fn new(lr: f64, beta_1: f32, beta_2: f32, eps: f32, weight_decay: f32, t: usize, grad_scale: f32) -> Self {
        let t = t as i32;
        Self { lr: lr as f32, beta_1, beta_2, eps, keep: (1.0 - lr * weight_decay as f64) as f32, bias_1: 1.0 - beta_1.powi(t), bias_2: 1.0 - beta_2.powi(t), grad_scale }
    }

    /// One element: the new (weight, m, v) from the weight `p`, gradient `g` and moments.
    /// The order of every operation is burn's, so that the results are its bits (those of
    /// burn's step on the gradient scaled first, when `grad_scale` is not 1: g·1 is g).
    #[inline(always)]
    pub fn apply(&self, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        let g = g * self.grad_scale;
        let m = m * self.beta_1 + g * (1.0 - self.beta_1);
        let v = v * self.beta_2 + g * g * (1.0 - self.beta_2);
        let delta = (m / self.bias_1) / ((v / self.bias_2).sqrt() + self.eps);
        (p * self.keep - delta * self.lr, m, v)
    }
}

/// The step by burn's tensor ops ([`ModelBackend::adamw`]'s default): weight, m, v.
pub fn step_by_ops<B: Backend, const D: usize>(p: Tensor<B, D>, g: Tensor<B, D>, m: Tensor<B, D>, v: Tensor<B, D>, s: AdamWStep) -> [Tensor<B, D>; 3] {
    let g = if s.grad_scale == 1.0 { g } else { g.mul_scalar(s.grad_scale) };
    let m = m.mul_scalar(s.beta_1).add(g.clone().mul_scalar(1.0 - s.beta_1));
    let v = v.mul_scalar(s.beta_2).add(g.square().mul_scalar(1.0 - s.beta_2));
    let delta = m.clone().div_scalar(s.bias_1).div(v.clone().div_scalar(s.bias_2).sqrt().add_scalar(s.eps));
    [p.mul_scalar(s.keep) - delta.mul_scalar(s.lr), m, v]
}

/// One step of any shape of parameter through [`ModelBackend::adamw`]; `m` and `v` absent
/// on the first step (zeros: the same bits as burn's first step, which has no β·m term).
pub fn step<B: ModelBackend, const D: usize>(p: Tensor<B, D>, g: Tensor<B, D>, moments: Option<(Tensor<B, D>, Tensor<B, D>)>, s: AdamWStep) -> [Tensor<B, D>; 3] {
    let (m, v) = moments.unwrap_or_else(|| (g.zeros_like(), g.zeros_like()));
    let prim = |x: Tensor<B, D>| x.into_primitive().tensor();
    B::adamw(prim(p), prim(g), prim(m), prim(v), s).map(|x: FloatTensor<B>| Tensor::from_primitive(TensorPrimitive::Float(x)))
}
