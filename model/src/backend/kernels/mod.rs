//! Kernels of our own for the cubecl backends (CUDA; wgpu in the tests, on Mesa's
//! lavapipe): what burn runs as chains of element-wise ops and reductions, each a pass
//! through memory and a launch (the H200 profile of an untuned SFT step: 16,500 such
//! launches, a third of the step), in one kernel each way: attention's softmax by rows of
//! a block of scores, RMSNorm, silu(gate) ∘ up, RoPE, the attention backward's sums, and
//! AdamW's step. A row a cube (128 threads,
//! reductions in shared memory) or an element a thread; arithmetic in f32 whatever the
//! tensors' dtype, as the ops they replace (`crate::attention`, `crate::norm`,
//! `crate::swiglu`, `crate::rope`) compute it.
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

mod adamw;
mod elementwise;
mod norm;
mod softmax;

pub use adamw::adamw;
pub use elementwise::{add_rows, rotary, swiglu, swiglu_backward};
pub use norm::{rms_norm, rms_norm_backward};
pub use softmax::{causal_softmax, causal_softmax_grad};

/// Threads a row (a power of two, for the tree reductions).
const THREADS: usize = 128;

/// Threads a cube for element-wise kernels.
const ELEMENT_THREADS: u32 = 256;

/// Below every score (WGSL takes no infinite literal).
const LOWEST: f32 = -3.0e38;

/// The sum of every thread's `v` in the cube (every thread gets it).
#[cube]
fn cube_sum(v: f32, shared: &mut SharedMemory<f32>) -> f32 {
    let unit = UNIT_POS_X as usize;
    shared[unit] = v;
    sync_cube();
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if unit < half {
            shared[unit] += shared[unit + half];
        }
        sync_cube();
        half /= 2;
    }
    let total = shared[0];
    sync_cube(); // every thread has read it before the memory is written again
    total
}

/// The max of every thread's `v` in the cube (every thread gets it).
#[cube]
fn cube_max(v: f32, shared: &mut SharedMemory<f32>) -> f32 {
    let unit = UNIT_POS_X as usize;
    shared[unit] = v;
    sync_cube();
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if unit < half {
            shared[unit] = max(shared[unit], shared[unit + half]);
        }
        sync_cube();
        half /= 2;
    }
    let top = shared[0];
    sync_cube();
    top
}

/// A cube a row for `rows` rows (the row is `CUBE_POS`; grids past 65,535 cubes spread
/// over two dimensions, so a kernel checks `CUBE_POS < rows`).
fn row_grid<R: CubeRuntime>(t: &CubeTensor<R>, rows: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(THREADS as u32);
    (calculate_cube_count_elemwise(&t.client, rows * THREADS, dim), dim)
}

/// A thread an element for `n` elements (the element is `ABSOLUTE_POS`, checked `< n`).
fn element_grid<R: CubeRuntime>(t: &CubeTensor<R>, n: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(ELEMENT_THREADS);
    (calculate_cube_count_elemwise(&t.client, n, dim), dim)
}
