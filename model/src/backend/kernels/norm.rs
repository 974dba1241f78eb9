//! RMSNorm ([`crate::norm`]) a row a cube: the sum of squares reduced in shared memory,
//! then one pass. burn's ops take six kernels forward and, through autodiff, some fifteen
//! backward.
use super::{cube_sum, row_grid, THREADS};
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// 1 / rms of row `base..base + n` of `x`.
#[cube]
fn inverse_rms<F: Float>(x: &Tensor<F>, base: usize, n: usize, eps: f32, shared: &mut SharedMemory<f32>) -> f32 {
    let mut squares = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < n {
        let v = f32::cast_from(x[base + i]);
        squares += v * v;
        i += THREADS;
    }
    let mean = cube_sum(squares, shared) / f32::cast_from(n);
    1.0f32 / (mean + eps).sqrt()
}

/// y = x · r · γ (f32), a row of `x` (`[rows, n]`) a cube.
#[cube(launch)]
fn rms_norm_kernel<F: Float>(x: &Tensor<F>, gain: &Tensor<f32>, y: &mut Tensor<f32>, eps: f32, #[define(F)] _dtype: StorageType) {
    let (rows, n) = (x.shape(0), x.shape(1));
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let base = row * n;
    let mut shared = SharedMemory::<f32>::new(THREADS);
    let r = inverse_rms::<F>(x, base, n, eps, &mut shared);
    let mut i = UNIT_POS_X as usize;
    while i < n {
        y[base + i] = f32::cast_from(x[base + i]) * r * gain[i];
        i += THREADS;
    }
}

/// dx = r·(g − x̂·mean(g ∘ x̂)) with g = dy ∘ γ and x̂ = x·r, in `x`'s dtype, and each row's
/// dy ∘ x̂ (f32; summed over rows, the gain's gradient).
#[cube(launch)]
fn rms_norm_grad_kernel<F: Float>(x: &Tensor<F>, gain: &Tensor<f32>, dy: &Tensor<f32>, dx: &mut Tensor<F>, dy_xhat: &mut Tensor<f32>, eps: f32, #[define(F)] _dtype: StorageType) {
    let (rows, n) = (x.shape(0), x.shape(1));
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let base = row * n;
    let mut shared = SharedMemory::<f32>::new(THREADS);
    let r = inverse_rms::<F>(x, base, n, eps, &mut shared);
    let mut dot = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < n {
        dot += dy[base + i] * gain[i] * f32::cast_from(x[base + i]) * r;
        i += THREADS;
    }
    let mean = cube_sum(dot, &mut shared) / f32::cast_from(n);
    let mut i = UNIT_POS_X as usize;
    while i < n {
        let xhat = f32::cast_from(x[base + i]) * r;
        dx[base + i] = F::cast_from(r * (dy[base + i] * gain[i] - xhat * mean));
        dy_xhat[base + i] = dy[base + i] * xhat;
        i += THREADS;
    }
}

/// Rows summed a chunk of [`CHUNK`] a cube: `[rows, n]` → `[⌈rows / CHUNK⌉, n]`, a thread a
/// column (reads coalesced across a cube's threads).
#[cube(launch)]
fn column_sums_kernel(t: &Tensor<f32>, out: &mut Tensor<f32>) {
    let (rows, n) = (t.shape(0), t.shape(1));
    let chunk = CUBE_POS;
    let start = chunk * CHUNK;
    if start >= rows {
        terminate!();
    }
    let end = min(start + CHUNK, rows);
    let mut c = UNIT_POS_X as usize;
    while c < n {
        let mut sum = 0.0f32;
        for r in start..end {
            sum += t[r * n + c];
        }
        out[chunk * n + c] = sum;
        c += THREADS;
    }
}

/// Rows a cube of [`column_sums_kernel`] sums.
const CHUNK: usize = 256;

/// The sums over the rows of `t` (`[rows, n]`, f32): `[n]`. By chunks of rows, then the
/// chunks' sums likewise (a column reduction of our own: burn's on wgpu went wrong past
/// 65,535 rows, and the gain of q's norm sums batch × length × heads rows).
pub fn column_sums<R: CubeRuntime>(t: CubeTensor<R>) -> CubeTensor<R> {
    let mut t = into_contiguous(t);
    loop {
        let (rows, n) = (t.meta.shape()[0], t.meta.shape()[1]);
        let chunks = rows.div_ceil(CHUNK);
        let shape = if chunks == 1 { Shape::new([n]) } else { Shape::new([chunks, n]) }; // the kernel writes row-major either way
        let out = empty_device_dtype::<R>(t.client.clone(), t.device.clone(), shape, DType::F32);
        let (count, dim) = row_grid(&t, chunks);
        let client = t.client.clone();
        column_sums_kernel::launch::<R>(&client, count, dim, t.into_tensor_arg(), out.clone().into_tensor_arg());
        if chunks == 1 {
            return out;
        }
        t = out;
    }
}

/// RMSNorm of each row of `x` (`[rows, n]`, any dtype) with `gain` (`[n]`, f32): f32.
pub fn rms_norm<R: CubeRuntime>(x: CubeTensor<R>, gain: CubeTensor<R>, eps: f32) -> CubeTensor<R> {
    let (x, gain) = (into_contiguous(x), into_contiguous(gain));
    let y = empty_device_dtype::<R>(x.client.clone(), x.device.clone(), x.shape(), DType::F32);
    if y.meta.num_elements() == 0 {
        return y;
    }
    let (count, dim) = row_grid(&x, x.meta.shape()[0]);
    let (client, dtype) = (x.client.clone(), x.dtype);
    rms_norm_kernel::launch::<R>(&client, count, dim, x.into_tensor_arg(), gain.into_tensor_arg(), y.clone().into_tensor_arg(), eps, dtype.into());
    y
}

/// [`rms_norm`]'s gradients: of `x` (its dtype) and of the gain (`[n]`, f32).
pub fn rms_norm_backward<R: CubeRuntime>(x: CubeTensor<R>, gain: CubeTensor<R>, eps: f32, dy: CubeTensor<R>) -> [CubeTensor<R>; 2] {
    let (x, gain, dy) = (into_contiguous(x), into_contiguous(gain), into_contiguous(dy));
    let shape: Shape = x.shape();
    let dx = empty_device_dtype::<R>(x.client.clone(), x.device.clone(), shape.clone(), x.dtype);
    let dy_xhat = empty_device_dtype::<R>(x.client.clone(), x.device.clone(), shape, DType::F32);
    if dx.meta.num_elements() == 0 {
        let dgain = burn_cubecl::ops::numeric::zeros_client::<R>(x.client.clone(), x.device.clone(), gain.shape(), DType::F32);
        return [dx, dgain];
    }
    let (count, dim) = row_grid(&x, x.meta.shape()[0]);
    let (client, dtype) = (x.client.clone(), x.dtype);
    rms_norm_grad_kernel::launch::<R>(&client, count, dim, x.into_tensor_arg(), gain.into_tensor_arg(), dy.into_tensor_arg(), dx.clone().into_tensor_arg(), dy_xhat.clone().into_tensor_arg(), eps, dtype.into());
    [dx, column_sums(dy_xhat)]
}
