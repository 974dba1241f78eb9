//! One AdamW step of a parameter, an element a thread: burn's `AdamW` takes fifteen
//! element-wise launches a parameter, each a pass through memory, where this reads the
//! weight, gradient and moments once and writes the three back ([`crate::adamw`]).
use super::element_grid;
use crate::adamw::AdamWStep;
use burn::tensor::TensorMetadata;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// [`AdamWStep::apply`], its operations in the same order.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn adamw_kernel(p: &Tensor<f32>, g: &Tensor<f32>, m: &Tensor<f32>, v: &Tensor<f32>, p_out: &mut Tensor<f32>, m_out: &mut Tensor<f32>, v_out: &mut Tensor<f32>, lr: f32, beta_1: f32, beta_2: f32, eps: f32, keep: f32, bias_1: f32, bias_2: f32, grad_scale: f32) {
    let i = ABSOLUTE_POS;
    if i >= p_out.len() {
        terminate!();
    }
    let gi = g[i] * grad_scale;
    let mi = m[i] * beta_1 + gi * (1.0f32 - beta_1);
    let vi = v[i] * beta_2 + gi * gi * (1.0f32 - beta_2);
    let delta = (mi / bias_1) / ((vi / bias_2).sqrt() + eps);
    p_out[i] = p[i] * keep - delta * lr;
    m_out[i] = mi;
    v_out[i] = vi;
}

/// The new weight and moments of an f32 parameter `p` (any shape; `g`, `m`, `v` its
/// shape, f32).
pub fn adamw<R: CubeRuntime>(p: CubeTensor<R>, g: CubeTensor<R>, m: CubeTensor<R>, v: CubeTensor<R>, s: AdamWStep) -> [CubeTensor<R>; 3] {
    let [p, g, m, v] = [p, g, m, v].map(into_contiguous);
    let out = || empty_device_dtype::<R>(p.client.clone(), p.device.clone(), p.shape(), p.dtype);
    let (p_out, m_out, v_out) = (out(), out(), out());
    let n = p.meta.num_elements();
    if n == 0 {
        return [p_out, m_out, v_out];
    }
    let (count, dim) = element_grid(&p, n);
    let client = p.client.clone();
    let [p, g, m, v] = [p, g, m, v].map(|t| t.into_tensor_arg());
    adamw_kernel::launch::<R>(&client, count, dim, p, g, m, v, p_out.clone().into_tensor_arg(), m_out.clone().into_tensor_arg(), v_out.clone().into_tensor_arg(), s.lr, s.beta_1, s.beta_2, s.eps, s.keep, s.bias_1, s.bias_2, s.grad_scale);
    [p_out, m_out, v_out]
}
