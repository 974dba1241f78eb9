//! Flex runs every op but its large matmuls on one thread: work that splits by attention
//! head runs a group of heads a core (each head's numbers are the same either way), and
//! generation's attention and cache writes are done here in place.
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::ops::{AttentionModuleOptions, ModuleOps};
use burn::tensor::{DType, Element, TensorPrimitive};
use burn_flex::FlexTensor;
use crate::lanes;
use bytemuck::Pod;
use rayon::prelude::*;

/// `f` on every input's heads (dim 1) in as many groups as rayon has threads (the
/// inputs' head counts are equal or all divide into the groups, as GQA's K/V heads
/// follow their query heads), the outputs' groups put back together.
pub(super) fn by_head_groups<const I: usize, const O: usize>(inputs: [Tensor<Flex, 4>; I], f: impl Fn([Tensor<Flex, 4>; I]) -> [Tensor<Flex, 4>; O] + Sync) -> [Tensor<Flex, 4>; O] {
    let heads = inputs.each_ref().map(|x| x.dims()[1]);
    let groups = (1..=rayon::current_num_threads().min(heads[0])).rev().find(|g| heads.iter().all(|h| h % g == 0)).unwrap_or(1);
    if groups == 1 {
        return f(inputs);
    }
    let group = |i: usize| {
        inputs.each_ref().map(|x| {
            let [b, h, t, d] = x.dims();
            let n = h / groups;
            x.clone().slice([0..b, i * n..(i + 1) * n, 0..t, 0..d])
        })
    };
    let parts: Vec<[Tensor<Flex, 4>; O]> = (0..groups).into_par_iter().map(|i| f(group(i))).collect();
    std::array::from_fn(|o| Tensor::cat(parts.iter().map(|p| p[o].clone()).collect(), 1))
}

/// Causal attention by blocks of queries, each against the keys up to its last query
/// (Flex's causal offset aligns the block's queries to the end of those keys), about
/// half the work on long rows; a group of heads a core. The queries are the last
/// positions of the keys; `mask` (`[batch, 1, queries, keys]`, true = masked) hides more.
pub(super) fn causal_by_blocks(q: FlexTensor, k: FlexTensor, v: FlexTensor, mask: Option<FlexTensor>) -> FlexTensor {
    const BLOCK: usize = 256;
    let causal = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    let f = |x| Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(x));
    let mask = mask.map(Tensor::<Flex, 4, Bool>::from_primitive);
    let (q, k, v) = (f(q), f(k), f(v));
    // GQA: each group repeats its own KV heads, unless there are fewer of them than
    // groups there could be (one KV head on many cores): then all of them first.
    let [h, kv_heads] = [q.dims()[1], k.dims()[1]];
    let (k, v) = match kv_heads < h.min(rayon::current_num_threads()) {
        true => (crate::qwen3::repeat_kv(k, h / kv_heads), crate::qwen3::repeat_kv(v, h / kv_heads)),
        false => (k, v),
    };
    let [out] = by_head_groups([q, k, v], |[q, k, v]| {
        let [b, h, t, d] = q.dims();
        let [keys, dv] = [k.dims()[2], v.dims()[3]];
        let past = keys - t;
        let n_rep = h / k.dims()[1];
        let (k, v) = (crate::qwen3::repeat_kv(k, n_rep), crate::qwen3::repeat_kv(v, n_rep));
        let attend = |q: Tensor<Flex, 4>, k: Tensor<Flex, 4>, v: Tensor<Flex, 4>, mask: Option<Tensor<Flex, 4, Bool>>| {
            let mask = mask.map(Tensor::into_primitive);
            f(Flex::attention(q.into_primitive().tensor(), k.into_primitive().tensor(), v.into_primitive().tensor(), mask, None, causal))
        };
        if t <= BLOCK {
            return [attend(q, k, v, mask.clone())];
        }
        let blocks = (0..t).step_by(BLOCK).map(|start| {
            let (end, seen) = ((start + BLOCK).min(t), past + (start + BLOCK).min(t));
            let part = |x: &Tensor<Flex, 4>, rows: std::ops::Range<usize>, w: usize| x.clone().slice([0..b, 0..h, rows, 0..w]);
            let mask = mask.as_ref().map(|m| m.clone().slice([0..b, 0..1, start..end, 0..seen]));
            attend(part(&q, start..end, d), part(&k, 0..seen, d), part(&v, 0..seen, dv), mask)
        });
        [Tensor::cat(blocks.collect(), 2)]
    });
    out.into_primitive().tensor()
}

/// Whether `x` may be written in place: the only reference to its buffer, and the whole
/// of it in order (contiguous from offset 0).
fn writable(x: &FlexTensor) -> bool {
    x.is_unique() && x.is_contiguous() && x.layout().start_offset() == 0 && x.bytes().len() == x.layout().num_elements() * x.dtype().size()
}

/// [`super::ModelBackend::kv_write`]: in place when `cache` holds its buffer alone
/// and whole (contiguous, as a cache grown by `cat` is), else by slice_assign.
pub(super) fn kv_write_in_place(mut cache: FlexTensor, new: FlexTensor, at: usize) -> FlexTensor {
    if !writable(&cache) || cache.dtype() != new.dtype() {
        return super::kv_write_by_slice_assign::<Flex>(cache, new, at);
    }
    let [_, _, capacity, d] = cache.layout().shape().dims();
    let span = new.layout().shape()[2] * d;
    let new = new.to_contiguous();
    // Row i (a batch row's KV head) of `new` goes to positions at.. of cache row i.
    fn write<E: Element + Pod>(cache: &mut FlexTensor, new: &FlexTensor, capacity: usize, at: usize, d: usize, span: usize) {
        let dst = cache.try_storage_mut::<E>().expect("a unique buffer");
        for (i, src) in new.storage::<E>().chunks_exact(span).enumerate() {
            dst[(i * capacity + at) * d..][..span].copy_from_slice(src);
        }
    }
    match cache.dtype() {
        DType::F32 => write::<f32>(&mut cache, &new, capacity, at, d, span),
        DType::BF16 => write::<half::bf16>(&mut cache, &new, capacity, at, d, span),
        DType::F16 => write::<half::f16>(&mut cache, &new, capacity, at, d, span),
        _ => return super::kv_write_by_slice_assign::<Flex>(cache, new, at),
    }
    cache
}

/// [`super::ModelBackend::decode_attention`] over the first `filled` keys, read in
/// place (each (row, KV head)'s keys lie contiguous in the cache), the pairs spread
/// over rayon's threads; computed in f32, as Flex's attention computes bf16 and f16.
pub(super) fn decode_attention(q: FlexTensor, k: FlexTensor, v: FlexTensor, mask: Option<FlexTensor>, filled: usize) -> FlexTensor {
    let [b, _, _, d] = q.layout().shape().dims();
    let keys = k.layout().shape()[2];
    let rows_contiguous = |x: &FlexTensor| {
        let s = x.layout().strides();
        s[3] == 1 && s[2] == d as isize && s[0] >= 0 && s[1] >= 0
    };
    let mask_fits = mask.as_ref().is_none_or(|m| m.layout().shape().dims::<4>() == [b, 1, 1, keys]);
    let same_dtype = k.dtype() == q.dtype() && v.dtype() == q.dtype();
    if !same_dtype || !rows_contiguous(&k) || !rows_contiguous(&v) || !mask_fits {
        return super::decode_attention_over_capacity::<Flex>(q, k, v, mask);
    }
    match q.dtype() {
        DType::F32 => decode_kernel::<f32>(q, k, v, mask, filled),
        DType::BF16 => decode_kernel::<half::bf16>(q, k, v, mask, filled),
        DType::F16 => decode_kernel::<half::f16>(q, k, v, mask, filled),
        _ => super::decode_attention_over_capacity::<Flex>(q, k, v, mask),
    }
}

/// A KV cache's element type, read as f32 (burn's conversions).
fn decode_kernel<E: Element + Pod>(q: FlexTensor, k: FlexTensor, v: FlexTensor, mask: Option<FlexTensor>, filled: usize) -> FlexTensor {
    let [b, g, r, d] = q.layout().shape().dims();
    let keys = k.layout().shape()[2];
    let q = q.to_contiguous();
    let mask = mask.map(|m| m.to_contiguous());
    let qs: Vec<f32> = q.storage::<E>().iter().map(|&x| x.elem::<f32>()).collect();
    let (ks, vs) = (k.storage::<E>(), v.storage::<E>());
    let masked = mask.as_ref().map(|m| m.storage::<u8>());
    // Offset of pair i's first position in x.
    let start = |x: &FlexTensor, i: usize| {
        let s = x.layout().strides();
        x.layout().start_offset() + (i / g) * s[0] as usize + (i % g) * s[1] as usize
    };
    let scale = (d as f32).sqrt().recip();
    let mut out = vec![0f32; b * g * r * d];
    out.par_chunks_mut(r * d).enumerate().for_each(|(i, out)| {
        let row = i / g;
        let seen: Vec<usize> = (0..filled).filter(|&j| masked.is_none_or(|m| m[row * keys + j] == 0)).collect();
        let (k0, v0, n) = (start(&k, i), start(&v, i), seen.len());
        let queries = &qs[i * r * d..][..r * d];
        // scores[query][key], each key read once for every query of the pair.
        let mut scores = vec![0f32; r * n];
        for (c, &j) in seen.iter().enumerate() {
            let key = &ks[k0 + j * d..][..d];
            for (query, s) in queries.chunks_exact(d).zip(scores.chunks_exact_mut(n)) {
                s[c] = dot(query, key) * scale;
            }
        }
        scores.chunks_exact_mut(n).for_each(lanes::softmax);
        for (c, &j) in seen.iter().enumerate() {
            let value = &vs[v0 + j * d..][..d];
            for (o, s) in out.chunks_exact_mut(d).zip(scores.chunks_exact(n)) {
                o.iter_mut().zip(value).for_each(|(o, &x)| *o += s[c] * x.elem::<f32>());
            }
        }
    });
    let out: Vec<E> = out.into_iter().map(E::from_elem).collect();
    FlexTensor::from_data(TensorData::new(out, [b, g, r, d]))
}

/// Σ a·b in eight lanes (a sum the compiler vectorizes; one running sum it may not reorder).
fn dot<E: Element>(a: &[f32], b: &[E]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y.elem::<f32>()).sum();
    let mut lanes = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l].elem::<f32>();
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// [`super::ModelBackend::softmax_last`] for f32 (anything else: burn's softmax). Rows on
/// rayon's threads.
pub(super) fn softmax_last(x: FlexTensor) -> FlexTensor {
    if x.dtype() != DType::F32 {
        let x = Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(x));
        return burn::tensor::activation::softmax(x, 3).into_primitive().tensor();
    }
    let shape = x.layout().shape().clone();
    let n = shape[shape.num_dims() - 1];
    let mut rows = if writable(&x) { x } else { FlexTensor::from_data(x.into_data()) };
    rows.try_storage_mut::<f32>().expect("a unique buffer").par_chunks_mut(n).for_each(lanes::softmax);
    rows
}

/// [`super::ModelBackend::logit_stats`] for f32 logits: a row a task, a pass for its
/// maximum and one for Σe and Σe·(z − max) with the vectorized exp (burn's log-softmax,
/// gather and entropy make six passes over the chunk, with libm's exp twice).
pub(super) fn logit_stats(z: FlexTensor, targets: FlexTensor) -> [FlexTensor; 3] {
    if z.dtype() != DType::F32 {
        let (lp, ent, lse) = crate::lm_head::logit_stats_by_ops::<Flex>(Tensor::from_primitive(TensorPrimitive::Float(z)), Tensor::from_primitive(targets));
        return [lp, ent, lse].map(|x| x.into_primitive().tensor());
    }
    let z = z.to_contiguous();
    let [n, vocab] = [z.layout().shape()[0], z.layout().shape()[1]];
    let targets = ids(targets);
    let stats: Vec<[f32; 3]> = z.storage::<f32>().par_chunks(vocab).zip(&targets).map(|(row, &t)| {
        let max = lanes::max(row);
        let (sum, moment) = lanes::exp_sums(row, max);
        let lse = max + sum.ln();
        [row[t] - lse, sum.ln() - moment / sum, lse]
    }).collect();
    std::array::from_fn(|i| FlexTensor::from_data(TensorData::new(stats.iter().map(|s| s[i]).collect::<Vec<f32>>(), [n])))
}

/// [`super::ModelBackend::logit_grad`] for f32: −g·e^(z − lse) a row a task (lse from a
/// pass over the row when not given), in place where `z` is the only reference to its
/// buffer, then g added at the target.
pub(super) fn logit_grad(z: FlexTensor, lse: Option<FlexTensor>, targets: FlexTensor, g: FlexTensor) -> FlexTensor {
    let f = |x| Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(x));
    if z.dtype() != DType::F32 {
        return crate::lm_head::logit_grad_by_ops::<Flex>(Tensor::from_primitive(TensorPrimitive::Float(z)), lse.map(f), Tensor::from_primitive(targets), f(g)).into_primitive().tensor();
    }
    let vocab = z.layout().shape()[1];
    let floats = |x| f(x).into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    let (lse, g, targets) = (lse.map(floats), floats(g), ids(targets));
    let mut dz = if writable(&z) { z } else { FlexTensor::from_data(z.into_data()) };
    dz.try_storage_mut::<f32>().expect("a unique buffer").par_chunks_mut(vocab).enumerate().for_each(|(i, row)| {
        let lse = lse.as_ref().map_or_else(|| {
            let max = lanes::max(row);
            max + lanes::exp_sums(row, max).0.ln()
        }, |l| l[i]);
        let g = g[i];
        lanes::scaled_exp(row, lse, -g);
        row[targets[i]] += g;
    });
    dz
}

/// Token ids of an int tensor, as indices.
fn ids(t: FlexTensor) -> Vec<usize> {
    Tensor::<Flex, 1, Int>::from_primitive(t).into_data().convert::<i64>().to_vec::<i64>().expect("i64").into_iter().map(|x| x as usize).collect()
}

/// Each row's first unmasked key, when a prefill's mask (`[batch, 1, t, keys]`, true =
/// masked) is left padding and the causal future: the last query sees every key from its
/// row's first on. `None` for any other pattern.
pub(super) fn left_padding(mask: FlexTensor) -> Option<Vec<usize>> {
    let mask = Tensor::<Flex, 4, Bool>::from_primitive(mask);
    let [b, _, t, keys] = mask.dims();
    let last: Vec<bool> = mask.slice([0..b, 0..1, t - 1..t, 0..keys]).into_data().to_vec::<bool>().ok()?;
    last.chunks(keys).map(|row| {
        let first = row.iter().position(|&m| !m).unwrap_or(keys);
        row[first..].iter().all(|&m| !m).then_some(first)
    }).collect()
}

/// [`super::ModelBackend::rotary`] for f32: each (row, position)'s heads against its cos
/// and sin, first halves `x1·cos − x2·sin`, second `x2·cos + x1·sin`.
pub(super) fn rotary(x: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
    let f = |x| Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(x));
    let [b, t, h, d] = x.layout().shape().dims();
    let per_position = [&cos, &sin].iter().all(|c| c.layout().shape().dims::<4>() == [b, t, 1, d]);
    if [&x, &cos, &sin].iter().any(|t| t.dtype() != DType::F32) || !per_position {
        return crate::rope::apply_rotary(f(x), f(cos), f(sin)).into_primitive().tensor();
    }
    let (x, cos, sin) = (x.to_contiguous(), cos.to_contiguous(), sin.to_contiguous());
    let (xs, cs, ss) = (x.storage::<f32>(), cos.storage::<f32>(), sin.storage::<f32>());
    let half = d / 2;
    let mut out = vec![0f32; b * t * h * d];
    out.par_chunks_mut(h * d).zip(xs.par_chunks(h * d)).enumerate().for_each(|(p, (o, x))| {
        let (c, s) = (&cs[p * d..][..half], &ss[p * d..][..half]);
        for (o, x) in o.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let (x1, x2) = x.split_at(half);
            let (o1, o2) = o.split_at_mut(half);
            for i in 0..half {
                o1[i] = x1[i] * c[i] - x2[i] * s[i];
                o2[i] = x2[i] * c[i] + x1[i] * s[i];
            }
        }
    });
    FlexTensor::from_data(TensorData::new(out, [b, t, h, d]))
}

/// The rows of `x` and `gain` as f32 slices' owners, when both are f32 (`[rows, n]`, `[n]`).
fn f32_rows(x: &FlexTensor, gain: &FlexTensor) -> bool {
    x.dtype() == DType::F32 && gain.dtype() == DType::F32
}

/// 1 / rms of a row (eps as the ops add it, in f32).
fn inverse_rms(x: &[f32], eps: f64) -> f32 {
    1.0 / (dot(x, x) / x.len() as f32 + eps as f32).sqrt()
}

/// [`super::ModelBackend::rms_norm`] for f32: a row a task, one pass for its sum of
/// squares and one to write (burn's ops: six passes, each op on one thread).
pub(super) fn rms_norm(x: FlexTensor, gain: FlexTensor, eps: f64) -> FlexTensor {
    if !f32_rows(&x, &gain) {
        return super::by_ops::rms_norm::<Flex>(x, gain, eps);
    }
    let [rows, n] = x.layout().shape().dims();
    let (x, gain) = (x.to_contiguous(), gain.to_contiguous());
    let (xs, g) = (x.storage::<f32>(), gain.storage::<f32>());
    let mut out = vec![0f32; rows * n];
    out.par_chunks_mut(n.max(1)).zip(xs.par_chunks(n.max(1))).for_each(|(o, x)| {
        let r = inverse_rms(x, eps);
        o.iter_mut().zip(x).zip(g).for_each(|((o, x), g)| *o = x * r * g);
    });
    FlexTensor::from_data(TensorData::new(out, [rows, n]))
}

/// [`super::ModelBackend::rms_norm_backward`] for f32: blocks of rows a task, each
/// writing its rows' dx and summing its own part of the gain's gradient; the parts are
/// added in order, so the numbers do not depend on the thread count.
pub(super) fn rms_norm_backward(x: FlexTensor, gain: FlexTensor, eps: f64, dy: FlexTensor) -> [FlexTensor; 2] {
    if !f32_rows(&x, &gain) || dy.dtype() != DType::F32 {
        return super::by_ops::rms_norm_backward::<Flex>(x, gain, eps, dy);
    }
    const ROWS: usize = 64;
    let [rows, n] = x.layout().shape().dims();
    let (x, gain, dy) = (x.to_contiguous(), gain.to_contiguous(), dy.to_contiguous());
    let (xs, g, dys) = (x.storage::<f32>(), gain.storage::<f32>(), dy.storage::<f32>());
    let block = (ROWS * n).max(1);
    let mut dx = vec![0f32; rows * n];
    let parts: Vec<Vec<f32>> = dx.par_chunks_mut(block).zip(xs.par_chunks(block)).zip(dys.par_chunks(block)).map(|((dx, x), dy)| {
        let mut dg = vec![0f32; n];
        for ((dx, x), dy) in dx.chunks_mut(n).zip(x.chunks(n)).zip(dy.chunks(n)) {
            let r = inverse_rms(x, eps);
            let mean = x.iter().zip(dy).zip(g).map(|((x, dy), g)| dy * g * x * r).sum::<f32>() / n as f32;
            for i in 0..n {
                let xhat = x[i] * r;
                dx[i] = r * (dy[i] * g[i] - xhat * mean);
                dg[i] += dy[i] * xhat;
            }
        }
        dg
    }).collect();
    let dgain = parts.iter().fold(vec![0f32; n], |mut sum, part| {
        sum.iter_mut().zip(part).for_each(|(s, p)| *s += p);
        sum
    });
    [FlexTensor::from_data(TensorData::new(dx, [rows, n])), FlexTensor::from_data(TensorData::new(dgain, [n]))]
}

/// silu(gate) ∘ up for f32, an element at a time on every core (burn's ops: three passes,
/// libm's exp).
pub(super) fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
    if gate.dtype() != DType::F32 || up.dtype() != DType::F32 {
        return super::by_ops::swiglu::<Flex>(gate, up);
    }
    let shape = gate.layout().shape().clone();
    let (gate, up) = (gate.to_contiguous(), up.to_contiguous());
    let mut out = vec![0f32; shape.num_elements()];
    out.par_chunks_mut(4096).zip(gate.storage::<f32>().par_chunks(4096)).zip(up.storage::<f32>().par_chunks(4096)).for_each(|((o, g), u)| {
        lanes::silu_mul(o, g, u);
    });
    FlexTensor::from_data(TensorData::new(out, shape))
}

/// [`super::ModelBackend::swiglu_backward`] for f32, as [`swiglu`].
pub(super) fn swiglu_backward(gate: FlexTensor, up: FlexTensor, d_out: FlexTensor) -> [FlexTensor; 2] {
    if [&gate, &up, &d_out].iter().any(|t| t.dtype() != DType::F32) {
        return super::by_ops::swiglu_backward::<Flex>(gate, up, d_out);
    }
    let shape = gate.layout().shape().clone();
    let (gate, up, d_out) = (gate.to_contiguous(), up.to_contiguous(), d_out.to_contiguous());
    let n = shape.num_elements();
    let (mut d_gate, mut d_up) = (vec![0f32; n], vec![0f32; n]);
    let inputs = gate.storage::<f32>().par_chunks(4096).zip(up.storage::<f32>().par_chunks(4096)).zip(d_out.storage::<f32>().par_chunks(4096));
    d_gate.par_chunks_mut(4096).zip(d_up.par_chunks_mut(4096)).zip(inputs).for_each(|((dg, du), ((g, u), d))| lanes::silu_mul_grad(dg, du, g, u, d));
    [FlexTensor::from_data(TensorData::new(d_gate, shape.clone())), FlexTensor::from_data(TensorData::new(d_up, shape))]
}

/// [`super::ModelBackend::matmul`] for 2-D f32 (the linear layers', their gradients' and
/// the LM head's products): gemm, as burn-flex's, on all cores past 192³ multiply-adds,
/// into a zeroed buffer of our own. burn-flex allocates its output as bytes and copies
/// them into an aligned buffer before gemm overwrites it: a pass through every output
/// page, on fresh pages for a vocabulary-sized one (8% of a 0.6B CPU step).
pub(super) fn matmul(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
    let two_d = |x: &FlexTensor| x.dtype() == DType::F32 && x.layout().shape().num_dims() == 2;
    if !two_d(&lhs) || !two_d(&rhs) {
        return <Flex as burn::tensor::ops::FloatTensorOps<Flex>>::float_matmul(lhs, rhs);
    }
    let ([m, k], n) = (lhs.layout().shape().dims(), rhs.layout().shape()[1]);
    assert_eq!(k, rhs.layout().shape()[0], "matmul: inner dimensions differ");
    let mut out = vec![0f32; m * n];
    let (ls, rs) = (lhs.layout().strides(), rhs.layout().strides());
    let at = |x: &FlexTensor| x.storage::<f32>()[x.layout().start_offset()..].as_ptr();
    let parallelism = match m * n * k >= 192 * 192 * 192 {
        true => gemm::Parallelism::Rayon(0),
        false => gemm::Parallelism::None,
    };
    // SAFETY: the operands' views lie in their buffers at these strides (Flex's layouts);
    // `out` holds m × n, row-major, and is not read (read_dst false).
    unsafe {
        gemm::gemm(m, n, k, out.as_mut_ptr(), 1, n as isize, false, at(&lhs), ls[1], ls[0], at(&rhs), rs[1], rs[0], 0.0, 1.0, false, false, false, parallelism);
    }
    FlexTensor::from_data(TensorData::new(out, [m, n]))
}

/// [`super::ModelBackend::sum_of_squares`]: f32 in blocks (the same sum on any number
/// of threads); anything else by burn's ops.
pub(super) fn sum_of_squares(x: FlexTensor) -> FlexTensor {
    if x.dtype() != DType::F32 {
        let n = x.layout().num_elements();
        return Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(x.reshape([n].into()))).square().sum().into_primitive().tensor();
    }
    let x = x.to_contiguous();
    let blocks: Vec<f64> = x.storage::<f32>().par_chunks(1 << 16).map(|b| dot::<f32>(b, b) as f64).collect();
    FlexTensor::from_data(TensorData::new(vec![blocks.iter().sum::<f64>() as f32], [1]))
}

/// [`super::ModelBackend::embedding_grad`]: f32, the rows added in order (a recurring
/// token's too) into `grad` in place when it is unique, else into a copy or into zeros.
pub(super) fn embedding_grad(grad: Option<FlexTensor>, vocab: usize, tokens: FlexTensor, d_out: FlexTensor) -> FlexTensor {
    if grad.as_ref().is_some_and(|g| g.dtype() != DType::F32) || d_out.dtype() != DType::F32 {
        let f = |x| Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(x));
        return crate::embedding::grad_by_ops::<Flex>(grad.map(f), vocab, Tensor::from_primitive(tokens), f(d_out)).into_primitive().tensor();
    }
    let hidden = d_out.layout().shape()[1];
    let mut grad = match grad {
        Some(g) if writable(&g) => g,
        Some(g) => FlexTensor::from_data(TensorData::new(g.to_contiguous().storage::<f32>().to_vec(), [vocab, hidden])),
        None => FlexTensor::from_data(TensorData::new(vec![0f32; vocab * hidden], [vocab, hidden])),
    };
    let (d_out, tokens) = (d_out.to_contiguous(), ids(tokens));
    let dst = grad.try_storage_mut::<f32>().expect("a unique buffer");
    for (&t, row) in tokens.iter().zip(d_out.storage::<f32>().chunks_exact(hidden)) {
        dst[t * hidden..][..hidden].iter_mut().zip(row).for_each(|(g, &x)| *g += x);
    }
    grad
}

/// [`super::ModelBackend::adamw`] for f32: one pass over the four tensors on every core
/// (burn's `AdamW` makes fifteen, each on one thread), writing the weight and moments in
/// place where nothing else holds them (else into copies).
pub(super) fn adamw(p: FlexTensor, g: FlexTensor, m: FlexTensor, v: FlexTensor, s: crate::adamw::AdamWStep) -> [FlexTensor; 3] {
    if [&p, &g, &m, &v].iter().any(|t| t.dtype() != DType::F32) {
        return super::by_ops::adamw::<Flex>(p, g, m, v, s);
    }
    let own = |t: FlexTensor| match writable(&t) {
        true => t,
        false => {
            let shape = t.layout().shape().clone();
            FlexTensor::from_data(TensorData::new(t.to_contiguous().storage::<f32>().to_vec(), shape))
        }
    };
    let g = g.to_contiguous();
    let (mut p, mut m, mut v) = (own(p), own(m), own(v));
    const CHUNK: usize = 1 << 14;
    let (ps, ms, vs) = (p.try_storage_mut::<f32>().expect("unique"), m.try_storage_mut::<f32>().expect("unique"), v.try_storage_mut::<f32>().expect("unique"));
    let chunks = ps.par_chunks_mut(CHUNK).zip(ms.par_chunks_mut(CHUNK)).zip(vs.par_chunks_mut(CHUNK));
    chunks.zip(g.storage::<f32>().par_chunks(CHUNK)).for_each(|(((p, m), v), g)| {
        for i in 0..p.len() {
            (p[i], m[i], v[i]) = s.apply(p[i], g[i], m[i], v[i]);
        }
    });
    [p, m, v]
}
