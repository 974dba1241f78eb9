//! Causal attention's softmax by rows of a block of queries, one kernel each way. burn's
//! ops take ten kernels a block forward and fourteen backward over the block's `[batch,
//! heads, rows, keys]` scores (casts, scale, mask, max, sub, exp, sum, div, ...); on the
//! H200 their reductions ran a thread a 4096-key row. Here a cube a row: two reductions,
//! then one pass that writes the output.
use super::{cube_max, cube_sum, LOWEST, THREADS};
use crate::attention::BlockRows;
use burn::tensor::backend::Backend;
use burn::tensor::TensorMetadata;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// Max and sum of exp(x − max) of entries `from..to` of the row at `base` of `s` times
/// `scale`.
#[cube]
fn row_stats<F: Float>(s: &Tensor<F>, base: usize, from: usize, to: usize, scale: f32, shared: &mut SharedMemory<f32>) -> (f32, f32) {
    let mut m = f32::new(LOWEST);
    let mut i = from + UNIT_POS_X as usize;
    while i < to {
        m = max(m, f32::cast_from(s[base + i]) * scale);
        i += THREADS;
    }
    let m = cube_max(m, shared);
    let mut l = 0.0f32;
    let mut i = from + UNIT_POS_X as usize;
    while i < to {
        l += (f32::cast_from(s[base + i]) * scale - m).exp();
        i += THREADS;
    }
    (m, cube_sum(l, shared))
}

/// The entries `from..to` of a block's row that it sees: the keys from `first[b, pos]` (its
/// document's start) to its position `pos`, less the block's first key `key0`.
#[cube]
fn seen<I: Numeric>(first: &Tensor<I>, b: usize, pos: usize, key0: usize) -> (usize, usize) {
    let lo = usize::cast_from(first[b * first.stride(0) + pos * first.stride(1)]);
    (lo - key0, pos + 1 - key0)
}

/// p = softmax(s·scale) over the entries each row sees ([`seen`]: row i of the block is
/// the query at position (start + i) / group), 0 elsewhere. A cube a row: x the row in the
/// block, y the (batch, head).
#[cube(launch)]
fn causal_softmax_kernel<F: Float, I: Numeric>(s: &Tensor<F>, first: &Tensor<I>, p: &mut Tensor<F>, start: u32, group: u32, key0: u32, scale: f32, #[define(F, I)] _dtypes: [StorageType; 2]) {
    let (heads, rows, keys) = (s.shape(1), s.shape(2), s.shape(3));
    let row = CUBE_POS_X as usize;
    let bh = CUBE_POS_Y as usize;
    let base = (bh * rows + row) * keys;
    let (from, to) = seen::<I>(first, bh / heads, (start as usize + row) / group as usize, key0 as usize);
    let mut shared = SharedMemory::<f32>::new(THREADS);
    let (m, l) = row_stats::<F>(s, base, from, to, scale, &mut shared);
    let mut i = UNIT_POS_X as usize;
    while i < keys {
        let mut x = 0.0f32;
        if i >= from && i < to {
            x = (f32::cast_from(s[base + i]) * scale - m).exp() / l;
        }
        p[base + i] = F::cast_from(x);
        i += THREADS;
    }
}

/// p as [`causal_softmax_kernel`], and ds = p ∘ (dp − Δ)·scale with Δ = rowsum(dO ∘ O) of
/// the row (row `start + row` of `out`, `d_out`: `[batch, heads, rows, dim]`, read at their
/// strides), summed here rather than by two launches a block.
#[cube(launch)]
fn causal_softmax_grad_kernel<F: Float, I: Numeric>(
    s: &Tensor<F>,
    dp: &Tensor<F>,
    out: &Tensor<F>,
    d_out: &Tensor<F>,
    first: &Tensor<I>,
    p: &mut Tensor<F>,
    ds: &mut Tensor<F>,
    start: u32,
    group: u32,
    key0: u32,
    scale: f32,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let (heads, rows, keys) = (s.shape(1), s.shape(2), s.shape(3));
    let row = CUBE_POS_X as usize;
    let bh = CUBE_POS_Y as usize;
    let base = (bh * rows + row) * keys;
    let (b, h, at) = (bh / heads, bh % heads, start as usize + row);
    let (from, to) = seen::<I>(first, b, at / group as usize, key0 as usize);
    let mut shared = SharedMemory::<f32>::new(THREADS);
    let (m, l) = row_stats::<F>(s, base, from, to, scale, &mut shared);
    let o_at = b * out.stride(0) + h * out.stride(1) + at * out.stride(2);
    let g_at = b * d_out.stride(0) + h * d_out.stride(1) + at * d_out.stride(2);
    let mut part = 0.0f32;
    let mut c = UNIT_POS_X as usize;
    while c < out.shape(3) {
        part += f32::cast_from(d_out[g_at + c * d_out.stride(3)]) * f32::cast_from(out[o_at + c * out.stride(3)]);
        c += THREADS;
    }
    let d = cube_sum(part, &mut shared);
    let mut i = UNIT_POS_X as usize;
    while i < keys {
        let mut x = 0.0f32;
        if i >= from && i < to {
            x = (f32::cast_from(s[base + i]) * scale - m).exp() / l;
        }
        p[base + i] = F::cast_from(x);
        ds[base + i] = F::cast_from(x * (f32::cast_from(dp[base + i]) - d) * scale);
        i += THREADS;
    }
}

/// Grid and threads for a `[batch, heads, rows, keys]` block: a cube a row.
fn launch_dims<R: CubeRuntime>(s: &CubeTensor<R>) -> (CubeCount, CubeDim) {
    let shape = s.meta.shape();
    let (bh, rows) = (shape[0] * shape[1], shape[2]);
    (CubeCount::Static(rows as u32, bh as u32, 1), CubeDim::new_1d(THREADS as u32))
}

/// softmax(s·scale) of a block of scores `s` (`[batch, heads, rows, keys]`), each row over
/// the keys it sees ([`BlockRows`]), in `s`'s dtype.
pub fn causal_softmax<R: CubeRuntime, B: Backend<IntTensorPrimitive = CubeTensor<R>>>(s: CubeTensor<R>, rows: &BlockRows<B>, scale: f32) -> CubeTensor<R> {
    let s = into_contiguous(s);
    let p = empty_device_dtype::<R>(s.client.clone(), s.device.clone(), s.shape(), s.dtype);
    if p.meta.num_elements() == 0 {
        return p;
    }
    let (count, dim) = launch_dims(&s);
    let dtypes = [s.dtype.into(), rows.first.dtype.into()];
    let (start, group, key0) = (rows.start as u32, rows.group as u32, rows.key0 as u32);
    causal_softmax_kernel::launch::<R>(&s.client.clone(), count, dim, s.into_tensor_arg(), rows.first.clone().into_tensor_arg(), p.clone().into_tensor_arg(), start, group, key0, scale, dtypes);
    p
}

/// [`causal_softmax`]'s `p` and the scores' gradient p ∘ (dp − Δ)·scale from the
/// probabilities' gradient `dp` (as `s`), Δ = rowsum(dO ∘ O) from the attention's output
/// `out` and its gradient `d_out` (`[batch, heads, len · group, dim]`, the block's rows at
/// `rows.start..`, any strides), all in `s`'s dtype.
pub fn causal_softmax_grad<R: CubeRuntime, B: Backend<IntTensorPrimitive = CubeTensor<R>>>(s: CubeTensor<R>, dp: CubeTensor<R>, out: CubeTensor<R>, d_out: CubeTensor<R>, rows: &BlockRows<B>, scale: f32) -> [CubeTensor<R>; 2] {
    let (s, dp) = (into_contiguous(s), into_contiguous(dp));
    let empty = || empty_device_dtype::<R>(s.client.clone(), s.device.clone(), s.shape(), s.dtype);
    let (p, ds) = (empty(), empty());
    if p.meta.num_elements() == 0 {
        return [p, ds];
    }
    let (count, dim) = launch_dims(&s);
    let dtypes = [s.dtype.into(), rows.first.dtype.into()];
    let (start, group, key0) = (rows.start as u32, rows.group as u32, rows.key0 as u32);
    let client = s.client.clone();
    let args = (s.into_tensor_arg(), dp.into_tensor_arg(), out.into_tensor_arg(), d_out.into_tensor_arg(), rows.first.clone().into_tensor_arg());
    causal_softmax_grad_kernel::launch::<R>(&client, count, dim, args.0, args.1, args.2, args.3, args.4, p.clone().into_tensor_arg(), ds.clone().into_tensor_arg(), start, group, key0, scale, dtypes);
    [p, ds]
}
