//! Rotary position embeddings as transformers computes them for Qwen3: `rotate_half`
//! layout (first half / second half of each head), inverse frequencies in f32, and
//! YaRN's blended frequencies with its attention scaling on cos/sin.
use crate::backend::ModelBackend;
use crate::config::{Qwen3Config, RopeScaling};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorPrimitive;

#[derive(Debug, Clone)]
pub struct Rope {
    /// `head_dim / 2` inverse frequencies.
    pub inv_freq: Vec<f32>,
    /// Multiplies cos and sin (1.0 unless YaRN).
    pub attention_scaling: f32,
}

impl Rope {
    pub fn new(cfg: &Qwen3Config) -> Self {
        let dim = cfg.head_dim;
        let base = cfg.rope_theta;
        // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in f32.
        let pos_freqs: Vec<f32> =
            (0..dim / 2).map(|i| (base as f32).powf((2 * i) as f32 / dim as f32)).collect();
        match &cfg.rope_scaling {
            RopeScaling::Default => {
                Rope { inv_freq: pos_freqs.iter().map(|p| 1.0 / p).collect(), attention_scaling: 1.0 }
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                let get_mscale = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
                let attention_factor = attention_factor.unwrap_or_else(|| match (mscale, mscale_all_dim) {
                    (Some(m), Some(ma)) if *m != 0.0 && *ma != 0.0 => get_mscale(*factor, *m) / get_mscale(*factor, *ma),
                    _ => get_mscale(*factor, 1.0),
                });
                let orig = *original_max_position_embeddings as f64;
                let correction_dim = |rot: f64| {
                    (dim as f64 * (orig / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * base.ln())
                };
                let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let low = low.max(0.0) as f32;
                let mut high = high.min(dim as f64 - 1.0) as f32;
                if low == high {
                    high += 0.001;
                }
                let inv_freq = pos_freqs
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation_factor = 1.0 - ramp;
                        let extrapolation = 1.0 / p;
                        let interpolation = 1.0 / (*factor as f32 * p);
                        interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
                    })
                    .collect();
                Rope { inv_freq, attention_scaling: attention_factor as f32 }
            }
        }
    }

    /// cos and sin for the given positions (`[batch][seq]`), shaped `[batch, seq, 1, head_dim]`
    /// to broadcast over the heads of `[batch, seq, heads, head_dim]` (the projections' own
    /// layout, before heads move ahead of positions for attention).
    pub fn cos_sin<B: Backend>(&self, positions: &[Vec<usize>], device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let (b, t) = (positions.len(), positions[0].len());
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(b * t * half * 2);
        let mut sin = Vec::with_capacity(b * t * half * 2);
        for row in positions {
            for &p in row {
                // emb = cat(freqs, freqs): the same angles for both halves.
                for _ in 0..2 {
                    for f in &self.inv_freq {
                        let angle = f * p as f32;
                        cos.push(angle.cos() * self.attention_scaling);
                        sin.push(angle.sin() * self.attention_scaling);
                    }
                }
            }
        }
        let shape = [b, t, 1, half * 2];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }
}

/// [`ModelBackend::rotary`] on tensors: `x` `[batch, seq, heads, head_dim]`, `cos` and
/// `sin` `[batch, seq, 1, head_dim]` ([`Rope::cos_sin`]).
pub fn rotary<B: ModelBackend>(x: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
    let p = |t: Tensor<B, 4>| t.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::rotary(p(x), p(cos), p(sin))))
}

/// RoPE under autodiff: cos and sin repeat their halves, so the transpose of
/// `rotate_half(·) * sin` is `rotate_half(·) * −sin` and dx = rotary(dy, cos, −sin).
pub(crate) fn autodiff<B: ModelBackend, C: CheckpointStrategy>(x: FloatTensor<Autodiff<B, C>>, cos: FloatTensor<Autodiff<B, C>>, sin: FloatTensor<Autodiff<B, C>>) -> FloatTensor<Autodiff<B, C>> {
    #[derive(Debug)]
    struct Rotary;
    impl<B: ModelBackend> Backward<B, 1> for Rotary {
        type State = (FloatTensor<B>, FloatTensor<B>); // cos, sin

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (cos, sin) = ops.state;
            let dy = grads.consume::<B>(&ops.node);
            if let Some(node) = &ops.parents[0] {
                grads.register::<B>(node.id, B::rotary(dy, cos, B::float_neg(sin)));
            }
        }
    }
    let out = B::rotary(x.primitive.clone(), cos.primitive.clone(), sin.primitive.clone());
    match Rotary.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((cos.primitive, sin.primitive), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// `x * cos + rotate_half(x) * sin` with `rotate_half(x) = cat(-x2, x1)`, over the last
/// dimension, in tensor ops (the default of [`ModelBackend::rotary`]).
pub fn apply_rotary<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, t, h, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..t, 0..h, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..t, 0..h, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}
