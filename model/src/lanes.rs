//! Row reductions and e^x written so that the compiler vectorizes them (a fold over
//! `f32::max`, a running sum or libm's `expf` is not): the CPU softmaxes of attention and
//! of sampling.

/// The maximum of a row in eight lanes.
pub fn max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for c in chunks {
        for l in 0..8 {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    lanes.iter().fold(tail, |a, &b| if b > a { b } else { a })
}

/// Σ row in eight lanes (Flex's attention softmax).
#[cfg(feature = "flex")]
pub fn sum(row: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The row replaced by its softmax (max, the vectorized exp, one scale by the sum).
#[cfg(feature = "flex")]
pub fn softmax(row: &mut [f32]) {
    let max = max(row);
    row.iter_mut().for_each(|x| *x = exp(*x - max));
    let inv = 1.0 / sum(row);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// Σ row in f64, four lanes (a 152K-token vocabulary's softmax normalizer, to f64 precision).
pub fn sum_f64(row: &[f32]) -> f64 {
    let mut lanes = [0f64; 4];
    let chunks = row.chunks_exact(4);
    let tail: f64 = chunks.remainder().iter().map(|&x| x as f64).sum();
    for c in chunks {
        for l in 0..4 {
            lanes[l] += c[l] as f64;
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// e^x for x <= 0 (a softmax's shifted scores), to about 2 ulp: 2^n · e^r with
/// n = round(x / ln 2), |r| <= ln 2 / 2, e^r by its Taylor series to r^6 (error below
/// 1.3e-7 relative); 0 below -87 (and for -inf, masked keys). Plain arithmetic, so the
/// compiler vectorizes the loops it sits in.
#[inline]
pub fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let xc = x.max(-87.0);
    let n = (xc * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (xc - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from n + 127 as the low bits of ROUND's mantissa (integer ops, no float->int cast).
    let scale = f32::from_bits(((n + 127.0 + ROUND).to_bits() - ROUND.to_bits()) << 23);
    if x < -87.0 { 0.0 } else { p * scale }
}

/// Σ e^(x − m) and Σ e^(x − m)·(x − m) over a row, in eight lanes (a softmax's normalizer
/// and, over it, its mean shifted logit: the LM head's logsumexp and entropy on Flex).
#[cfg(feature = "flex")]
pub fn exp_sums(row: &[f32], m: f32) -> (f32, f32) {
    let (mut sums, mut moments) = ([0f32; 8], [0f32; 8]);
    let chunks = row.chunks_exact(8);
    let (mut sum, mut moment) = (0f32, 0f32);
    for &x in chunks.remainder() {
        let e = exp(x - m);
        sum += e;
        moment += e * (x - m);
    }
    for c in chunks {
        for l in 0..8 {
            let e = exp(c[l] - m);
            sums[l] += e;
            moments[l] += e * (c[l] - m);
        }
    }
    (sums.iter().sum::<f32>() + sum, moments.iter().sum::<f32>() + moment)
}
