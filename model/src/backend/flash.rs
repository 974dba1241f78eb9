//! Causal attention on the CPU in f32 (training's, and generation's prefill), in the manner
//! of FlashAttention-2: the forward by blocks of queries against tiles of keys with an
//! online softmax, the backward
//! by blocks of queries recomputing their probabilities; the block products through
//! `gemm` (Flex's own matmul kernels), the softmaxes through [`crate::lanes`]. q, k and v
//! are read where they lie (the model's are strided views of `[batch, len, heads, dim]`),
//! a task per (row, head) or (row, head, query block), so no head needs a copy and every
//! core has work. Packed documents are spans of a row's queries, each block within one,
//! so all of a layer's documents are one call and no document is sliced out or joined.
//! Flex's own attention has a branch per score and libm's `expf`, walks the future keys of
//! a causal row, and runs on one thread.
use crate::lanes;
use burn::tensor::{DType, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// Queries per block: a block's scores, `QUERIES × keys` f32, stay in L2 up to ~2K keys.
const QUERIES: usize = 64;
/// Keys per tile of the forward.
const KEYS: usize = 128;

/// A `[batch, heads, len, dim]` f32 tensor read in place: element (b, h, i, c) at
/// `off + b·sb + h·sh + i·si + c`.
struct View<'a> {
    data: &'a [f32],
    off: usize,
    strides: [usize; 3],
}

impl<'a> View<'a> {
    /// `None` unless f32 with a unit, positive inner stride (then the caller copies).
    fn of(x: &'a FlexTensor) -> Option<Self> {
        let s = x.layout().strides();
        let ok = x.dtype() == DType::F32 && s.len() == 4 && s[3] == 1 && s[..3].iter().all(|&v| v >= 0);
        ok.then(|| View { data: x.storage::<f32>(), off: x.layout().start_offset(), strides: [s[0] as usize, s[1] as usize, s[2] as usize] })
    }

    /// Pointer to position `i` of row `b`, head `h`.
    fn at(&self, b: usize, h: usize, i: usize) -> *const f32 {
        self.data[self.off + b * self.strides[0] + h * self.strides[1] + i * self.strides[2]..].as_ptr()
    }

    fn row(&self, b: usize, h: usize, i: usize, d: usize) -> &[f32] {
        let start = self.off + b * self.strides[0] + h * self.strides[1] + i * self.strides[2];
        &self.data[start..start + d]
    }
}

/// `dst (m×n) = [dst +] scale · lhs (m×k) · rhs (k×n)`, each given by its pointer, row
/// stride and column stride; one thread (the callers run a task a core).
#[allow(clippy::too_many_arguments)]
fn gemm(m: usize, n: usize, k: usize, dst: (*mut f32, usize), add: bool, lhs: (*const f32, usize, usize), rhs: (*const f32, usize, usize), scale: f32) {
    // SAFETY: every caller passes pointers into live buffers that hold the m×k, k×n and
    // m×n matrices at these strides, dst unaliased.
    unsafe {
        gemm::gemm(m, n, k, dst.0, 1, dst.1 as isize, add, lhs.0, lhs.2 as isize, lhs.1 as isize, rhs.0, rhs.2 as isize, rhs.1 as isize, 1.0, scale, false, false, false, gemm::Parallelism::None)
    }
}

/// A row's queries in order, cut into spans `(queries, first key)`: each query of a span
/// sees the keys from the span's first key up to its own position. One span from key 0:
/// causal; from a row's first real key: left padding hidden; a span a document: packed
/// sequences, each seeing only itself.
pub(super) type Spans = Vec<(usize, usize)>;

/// Spans of packed documents (each row's lengths, in order).
pub(super) fn document_spans(docs: &[Vec<usize>]) -> Vec<Spans> {
    let spans = |lens: &Vec<usize>| {
        let starts = lens.iter().scan(0, |start, &n| Some(std::mem::replace(start, *start + n)));
        lens.iter().copied().zip(starts).collect()
    };
    docs.iter().map(spans).collect()
}

/// A block of a row's queries, `i0..i0 + rows` of its `t`, all in one span (`lo` its first
/// key): a span's queries by [`QUERIES`].
#[derive(Clone, Copy)]
struct Block {
    i0: usize,
    rows: usize,
    lo: usize,
}

fn blocks(spans: &Spans) -> Vec<Block> {
    let mut i0 = 0;
    let mut out = vec![];
    for &(n, lo) in spans {
        for at in (0..n).step_by(QUERIES) {
            out.push(Block { i0: i0 + at, rows: QUERIES.min(n - at), lo });
        }
        i0 += n;
    }
    out
}

/// `x` cut into consecutive pieces of `rows · width` floats, a block's each.
fn pieces<'a>(mut x: &'a mut [f32], blocks: &[Block], width: usize) -> Vec<(Block, &'a mut [f32])> {
    blocks.iter().map(|&blk| {
        let (piece, rest) = std::mem::take(&mut x).split_at_mut(blk.rows * width);
        x = rest;
        (blk, piece)
    }).collect()
}

/// Attention of `q` (`[batch, heads, t, dim]`, the last `t` positions) over `k`, `v`
/// (`[batch, kv_heads, keys, dim]`; a KV head serves `heads / kv_heads` query heads), each
/// row's queries seeing the keys its `spans` give (they cover its `t` queries), a query
/// that sees no key zeros. `None` when an input is not an f32 view this reads (the caller
/// falls back to burn's attention).
pub(super) fn forward(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, spans: &[Spans]) -> Option<FlexTensor> {
    let (qv, kv, vv) = (View::of(q)?, View::of(k)?, View::of(v)?);
    let dims = q.layout().shape();
    let [b, h, t, d] = [dims[0], dims[1], dims[2], dims[3]];
    let (kv_heads, keys) = (k.layout().shape()[1], k.layout().shape()[2]);
    let n_rep = h / kv_heads;
    let past = keys - t;
    let scale = 1.0 / (d as f32).sqrt();
    let rows_blocks: Vec<Vec<Block>> = spans.iter().map(blocks).collect();
    let mut out = vec![0f32; b * h * t * d];
    out.par_chunks_mut(t * d).enumerate().for_each(|(bh, head)| {
        let (bi, hi, kh) = (bh / h, bh % h, bh % h / n_rep);
        pieces(head, &rows_blocks[bi], d).into_par_iter().for_each(|(Block { i0, rows, lo }, o)| {
            let end = past + i0 + rows; // keys lo..end; query r at position past + i0 + r
            let (mut max, mut sum) = ([f32::NEG_INFINITY; QUERIES], [0f32; QUERIES]);
            let mut s = vec![0f32; rows * KEYS];
            for k0 in (lo..end).step_by(KEYS) {
                let n = KEYS.min(end - k0);
                let s = &mut s[..rows * n];
                gemm(rows, n, d, (s.as_mut_ptr(), n), false, (qv.at(bi, hi, i0), qv.strides[2], 1), (kv.at(bi, kh, k0), 1, kv.strides[2]), scale);
                for (r, (s, o)) in s.chunks_exact_mut(n).zip(o.chunks_exact_mut(d)).enumerate() {
                    // The future: keys after the query's position (only in the tiles that reach it).
                    let seen = (past + i0 + r + 1).saturating_sub(k0).min(n);
                    let m = max[r].max(lanes::max(&s[..seen]));
                    s[seen..].fill(0.0);
                    if m == f32::NEG_INFINITY {
                        continue; // no key yet (a padding query)
                    }
                    let tile = lanes::exp_shifted_sum(&mut s[..seen], m);
                    // First keys: max[r] = -inf, the factor 0 times an empty sum and output.
                    let rescale = lanes::exp(max[r] - m);
                    sum[r] = sum[r] * rescale + tile;
                    max[r] = m;
                    o.iter_mut().for_each(|x| *x *= rescale);
                }
                gemm(rows, d, n, (o.as_mut_ptr(), d), true, (s.as_ptr(), n, 1), (vv.at(bi, kh, k0), vv.strides[2], 1), 1.0);
            }
            for (r, o) in o.chunks_exact_mut(d).enumerate() {
                let inv = if sum[r] > 0.0 { 1.0 / sum[r] } else { 0.0 };
                o.iter_mut().for_each(|x| *x *= inv);
            }
        });
    });
    Some(FlexTensor::from_data(TensorData::new(out, [b, h, t, d])))
}

/// Gradients of [`forward`] (queries and keys at the same positions) for q, k, v
/// (FlashAttention-2's backward by blocks of queries: P = softmax(S), S = q kᵀ·s,
/// Δ = rowsum(dO ∘ O); dV = Pᵀ dO, dS = P ∘ (dO vᵀ − Δ), dQ = dS k·s, dK = dSᵀ q·s), a
/// task per (row, head), each block over its span's keys only; with GQA (`k`, `v` `[batch,
/// kv_heads, len, dim]`) each query head's dK and dV, then their sums a KV head, in head
/// order; `None` as for [`forward`].
pub(super) fn backward(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, out: &FlexTensor, d_out: &FlexTensor, spans: &[Spans]) -> Option<[FlexTensor; 3]> {
    let (qv, kv, vv, ov, gv) = (View::of(q)?, View::of(k)?, View::of(v)?, View::of(out)?, View::of(d_out)?);
    let dims = q.layout().shape();
    let [b, h, t, d] = [dims[0], dims[1], dims[2], dims[3]];
    let n_rep = h / k.layout().shape()[1];
    let scale = 1.0 / (d as f32).sqrt();
    let rows_blocks: Vec<Vec<Block>> = spans.iter().map(blocks).collect();
    let mut grads = [vec![0f32; b * h * t * d], vec![0f32; b * h * t * d], vec![0f32; b * h * t * d]];
    let [dq, dk, dv] = &mut grads;
    dq.par_chunks_mut(t * d).zip(dk.par_chunks_mut(t * d)).zip(dv.par_chunks_mut(t * d)).enumerate().for_each(|(bh, ((dq, dk), dv))| {
        let (bi, hi, kh) = (bh / h, bh % h, bh % h / n_rep);
        let (mut p, mut ds) = (vec![0f32; QUERIES * t], vec![0f32; QUERIES * t]);
        for (Block { i0, rows, lo }, dq) in pieces(dq, &rows_blocks[bi], d) {
            let e = i0 + rows - lo; // keys lo..i0 + rows
            let (p, ds) = (&mut p[..rows * e], &mut ds[..rows * e]);
            let (dk, dv) = (&mut dk[lo * d..], &mut dv[lo * d..]);
            let (qb, gb) = ((qv.at(bi, hi, i0), qv.strides[2], 1), (gv.at(bi, hi, i0), gv.strides[2], 1));
            gemm(rows, e, d, (p.as_mut_ptr(), e), false, qb, (kv.at(bi, kh, lo), 1, kv.strides[2]), scale);
            for (r, p) in p.chunks_exact_mut(e).enumerate() {
                let seen = i0 + r + 1 - lo;
                lanes::softmax(&mut p[..seen]);
                p[seen..].fill(0.0);
            }
            // dV[lo..] += Pᵀ dO
            gemm(e, d, rows, (dv.as_mut_ptr(), d), true, (p.as_ptr(), 1, e), gb, 1.0);
            // dS = P ∘ (dO vᵀ − Δ)
            gemm(rows, e, d, (ds.as_mut_ptr(), e), false, gb, (vv.at(bi, kh, lo), 1, vv.strides[2]), 1.0);
            for (r, (ds, p)) in ds.chunks_exact_mut(e).zip(p.chunks_exact(e)).enumerate() {
                let delta: f32 = gv.row(bi, hi, i0 + r, d).iter().zip(ov.row(bi, hi, i0 + r, d)).map(|(a, b)| a * b).sum();
                ds.iter_mut().zip(p).for_each(|(x, &p)| *x = p * (*x - delta));
            }
            // dQ = dS k·s; dK[lo..] += dSᵀ q·s
            gemm(rows, d, e, (dq.as_mut_ptr(), d), false, (ds.as_ptr(), e, 1), (kv.at(bi, kh, lo), kv.strides[2], 1), scale);
            gemm(e, d, rows, (dk.as_mut_ptr(), d), true, (ds.as_ptr(), 1, e), qb, scale);
        }
    });
    let [dq, dk, dv] = grads;
    let heads = |g: Vec<f32>| match n_rep {
        1 => FlexTensor::from_data(TensorData::new(g, [b, h, t, d])),
        _ => FlexTensor::from_data(TensorData::new(sum_groups(&g, n_rep, t * d), [b, h / n_rep, t, d])),
    };
    Some([FlexTensor::from_data(TensorData::new(dq, [b, h, t, d])), heads(dk), heads(dv)])
}

/// The sums of each `n` consecutive heads (`head` floats each) of `g`, added in order.
fn sum_groups(g: &[f32], n: usize, head: usize) -> Vec<f32> {
    let mut out = vec![0f32; g.len() / n];
    out.par_chunks_mut(head).zip(g.par_chunks(n * head)).for_each(|(o, group)| {
        for x in group.chunks_exact(head) {
            o.iter_mut().zip(x).for_each(|(o, x)| *o += x);
        }
    });
    out
}
