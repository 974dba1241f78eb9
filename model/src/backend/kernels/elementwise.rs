//! An element a thread: silu(gate) ∘ up ([`crate::swiglu`]; burn: sigmoid, two products
//! forward, some eight ops backward) and RoPE ([`crate::rope`]; burn: two slices, a
//! negation, a concatenation, two products and a sum).
use super::element_grid;
use burn::tensor::TensorMetadata;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

#[cube(launch)]
fn swiglu_kernel<F: Float>(gate: &Tensor<F>, up: &Tensor<F>, out: &mut Tensor<F>, #[define(F)] _dtype: StorageType) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    let g = f32::cast_from(gate[i]);
    let s = 1.0f32 / (1.0f32 + (-g).exp());
    out[i] = F::cast_from(g * s * f32::cast_from(up[i]));
}

/// d gate = d_out ∘ up ∘ s ∘ (1 + gate ∘ (1 − s)), d up = d_out ∘ gate ∘ s, s = sigmoid(gate).
#[cube(launch)]
fn swiglu_grad_kernel<F: Float>(gate: &Tensor<F>, up: &Tensor<F>, d_out: &Tensor<F>, d_gate: &mut Tensor<F>, d_up: &mut Tensor<F>, #[define(F)] _dtype: StorageType) {
    let i = ABSOLUTE_POS;
    if i >= d_up.len() {
        terminate!();
    }
    let (g, u, d) = (f32::cast_from(gate[i]), f32::cast_from(up[i]), f32::cast_from(d_out[i]));
    let s = 1.0f32 / (1.0f32 + (-g).exp());
    d_gate[i] = F::cast_from(d * u * s * (1.0f32 + g * (1.0f32 - s)));
    d_up[i] = F::cast_from(d * g * s);
}

/// out = x ∘ cos + rotate_half(x) ∘ sin over `x` `[batch, seq, heads, head_dim]`, `cos`,
/// `sin` `[batch, seq, 1, head_dim]`.
#[cube(launch)]
fn rotary_kernel<F: Float>(x: &Tensor<F>, cos: &Tensor<F>, sin: &Tensor<F>, out: &mut Tensor<F>, #[define(F)] _dtype: StorageType) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    let (heads, d) = (x.shape(2), x.shape(3));
    let j = i % d;
    let at = (i / (heads * d)) * d + j; // (batch, position)'s angle j
    let half = d / 2;
    let rotated = if j < half { -f32::cast_from(x[i + half]) } else { f32::cast_from(x[i - half]) };
    out[i] = F::cast_from(f32::cast_from(x[i]) * f32::cast_from(cos[at]) + rotated * f32::cast_from(sin[at]));
}

fn empty_like<R: CubeRuntime>(t: &CubeTensor<R>) -> CubeTensor<R> {
    empty_device_dtype::<R>(t.client.clone(), t.device.clone(), t.shape(), t.dtype)
}

/// silu(gate) ∘ up, in their dtype.
pub fn swiglu<R: CubeRuntime>(gate: CubeTensor<R>, up: CubeTensor<R>) -> CubeTensor<R> {
    let (gate, up) = (into_contiguous(gate), into_contiguous(up));
    let out = empty_like(&gate);
    if out.meta.num_elements() == 0 {
        return out;
    }
    let (count, dim) = element_grid(&out, out.meta.num_elements());
    let (client, dtype) = (out.client.clone(), out.dtype);
    swiglu_kernel::launch::<R>(&client, count, dim, gate.into_tensor_arg(), up.into_tensor_arg(), out.clone().into_tensor_arg(), dtype.into());
    out
}

/// [`swiglu`]'s gradients of `gate` and `up`.
pub fn swiglu_backward<R: CubeRuntime>(gate: CubeTensor<R>, up: CubeTensor<R>, d_out: CubeTensor<R>) -> [CubeTensor<R>; 2] {
    let (gate, up, d_out) = (into_contiguous(gate), into_contiguous(up), into_contiguous(d_out));
    let (d_gate, d_up) = (empty_like(&gate), empty_like(&gate));
    if gate.meta.num_elements() == 0 {
        return [d_gate, d_up];
    }
    let (count, dim) = element_grid(&gate, gate.meta.num_elements());
    let (client, dtype) = (gate.client.clone(), gate.dtype);
    swiglu_grad_kernel::launch::<R>(&client, count, dim, gate.into_tensor_arg(), up.into_tensor_arg(), d_out.into_tensor_arg(), d_gate.clone().into_tensor_arg(), d_up.clone().into_tensor_arg(), dtype.into());
    [d_gate, d_up]
}

/// RoPE (`x` `[batch, seq, heads, head_dim]`, `cos`, `sin` `[batch, seq, 1, head_dim]`, one
/// dtype), in `x`'s dtype.
pub fn rotary<R: CubeRuntime>(x: CubeTensor<R>, cos: CubeTensor<R>, sin: CubeTensor<R>) -> CubeTensor<R> {
    let (x, cos, sin) = (into_contiguous(x), into_contiguous(cos), into_contiguous(sin));
    let out = empty_like(&x);
    if out.meta.num_elements() == 0 {
        return out;
    }
    let (count, dim) = element_grid(&out, out.meta.num_elements());
    let (client, dtype) = (out.client.clone(), out.dtype);
    rotary_kernel::launch::<R>(&client, count, dim, x.into_tensor_arg(), cos.into_tensor_arg(), sin.into_tensor_arg(), out.clone().into_tensor_arg(), dtype.into());
    out
}

/// acc[.., at + r, j] += x[.., r, j] over `x` `[batch, heads, rows, d]` (any dtype) into
/// `acc` `[batch, heads, len, d]` (f32), in place.
#[cube(launch)]
fn add_rows_kernel<F: Float>(acc: &mut Tensor<f32>, x: &Tensor<F>, at: u32, #[define(F)] _dtype: StorageType) {
    let i = ABSOLUTE_POS;
    if i >= x.len() {
        terminate!();
    }
    let (rows, d, len) = (x.shape(2), x.shape(3), acc.shape(2));
    let (bh, r, j) = (i / (rows * d), (i / d) % rows, i % d);
    acc[(bh * len + at as usize + r) * d + j] += f32::cast_from(x[i]);
}

/// `sum` (f32) with `x` added to its positions `at..` (dim 2): in place where the sum's
/// buffer is its own, else into a copy.
pub fn add_rows<R: CubeRuntime>(sum: CubeTensor<R>, x: CubeTensor<R>, at: usize) -> CubeTensor<R> {
    let sum = match sum.can_mut() && sum.is_contiguous() && sum.is_contiguous_buffer() {
        true => sum,
        false => into_contiguous(sum).copy(),
    };
    let x = into_contiguous(x);
    let n = x.meta.num_elements();
    if n == 0 {
        return sum;
    }
    let (count, dim) = element_grid(&x, n);
    let (client, dtype) = (x.client.clone(), x.dtype);
    add_rows_kernel::launch::<R>(&client, count, dim, sum.clone().into_tensor_arg(), x.into_tensor_arg(), at as u32, dtype.into());
    sum
}
