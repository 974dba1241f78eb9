//! burn-cuda's large half-precision products on one kernel chosen in advance: cubek's
//! warp-specialized TMA matmul, the kernel burn's autotune picked for every large product
//! of a Qwen3-0.6B SFT step on an H200 (2026-12-04, README "Measured on an H200"). Without
//! autotune burn runs a general tensor-core kernel (~26 TFLOP/s there); with it, a fresh
//! machine first compiles and times some 30 candidates per shape. Where that kernel cannot
//! run (no TMA before Hopper, a layout or alignment it refuses) the product falls back to
//! burn's, and the shape is remembered so the refusal is not paid again.
//! `MODEL_PINNED_MATMUL=0` turns it off ([`crate::pinned_matmul`]).
use burn::tensor::DType;
use burn_cubecl::kernel::matmul::init_matmul_output;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::{launch_ref, MatmulAutotuneKey, Strategy};
use cubek::matmul::routines::BlueprintStrategy;
use cubek::std::InputBinding;
use std::collections::HashSet;
use std::sync::Mutex;

/// Smallest m, n and k a product needs to take the pinned kernel (128: the attention
/// backward's products have a head's 128 as a side; autotune gave those to TMA kernels
/// too): below it (decoding's few rows, short prompts) burn's choice stays.
const MIN_SIDE: usize = 128;

/// Products the pinned kernel refused: (dtype, shapes, strides) as text.
static REFUSED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// `lhs · rhs` on the pinned kernel, or the operands back when it does not apply.
pub(super) fn pinned_matmul<R: CubeRuntime>(lhs: CubeTensor<R>, rhs: CubeTensor<R>) -> Result<CubeTensor<R>, (CubeTensor<R>, CubeTensor<R>)> {
    let dtype = lhs.dtype;
    let (ls, rs) = (lhs.meta.shape().to_vec(), rhs.meta.shape().to_vec());
    let rank = ls.len();
    let (m, k, n) = (ls[rank - 2], ls[rank - 1], rs[rank - 1]);
    let half = matches!(dtype, DType::BF16 | DType::F16) && rhs.dtype == dtype;
    if !half || m.min(n).min(k) < MIN_SIDE || lhs.qparams.is_some() || rhs.qparams.is_some() || !crate::pinned_matmul() {
        return Err((lhs, rhs));
    }
    // As burn's autotune, which tries TMA kernels only where every stride but the
    // contiguous one is a multiple of 16 bytes and the batches are contiguous (TMA takes
    // nothing else: a transposed view or a slice of keys qualifies, a head-swapped one not).
    let tune_key = MatmulAutotuneKey::generate(&lhs.client, lhs.meta.shape(), rhs.meta.shape(), lhs.meta.strides(), rhs.meta.strides(), dtype.into(), dtype.into(), dtype.into(), None, None);
    if tune_key.definition.lhs_stride_factor < 4 || tune_key.definition.rhs_stride_factor < 4 {
        return Err((lhs, rhs));
    }
    let key = format!("{dtype:?} {ls:?}x{rs:?} {:?} {:?}", lhs.meta.strides(), rhs.meta.strides());
    if REFUSED.lock().unwrap().as_ref().is_some_and(|set| set.contains(&key)) {
        return Err((lhs, rhs));
    }
    let out = init_matmul_output(&lhs, &rhs, dtype);
    let strategy = Strategy::SpecializedTmaMma(BlueprintStrategy::Inferred(().into()));
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems { lhs: dtype.into(), rhs: dtype.into(), out: dtype.into() });
    let client = out.client.clone();
    let (l, r) = (InputBinding::new(lhs.clone().binding(), dtype.into()), InputBinding::new(rhs.clone().binding(), dtype.into()));
    match launch_ref(&strategy, &client, l, r, out.clone().binding(), &mut dtypes) {
        Ok(()) => Ok(out),
        Err(_) => {
            REFUSED.lock().unwrap().get_or_insert_with(HashSet::new).insert(key);
            Err((lhs, rhs))
        }
    }
}
