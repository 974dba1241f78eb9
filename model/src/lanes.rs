//! Row reductions, e^x and SiLU written so that the compiler vectorizes them (a fold over
//! `f32::max`, a running sum, a branch or libm's `expf` is not): the CPU softmaxes of
//! attention, of the LM head and of sampling, and the MLP's activation. Each loop is built
//! twice, for x86-64's SSE2 and for AVX2, and picks at run time (`wide!`): twice the lanes
//! where the CPU has them, the same numbers either way (Rust never fuses a multiply and an
//! add on its own).

/// `fn name(args) -> ret { body }`, its body compiled as built and once more with AVX2
/// enabled, the AVX2 build run where the CPU has it (std caches the check).
macro_rules! wide {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { avx2($($arg),*) };
            }
            body($($arg),*)
        }
    };
}

wide! {
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
}

/// Σ row in eight lanes.
#[cfg(feature = "flex")]
#[inline(always)]
fn sum_lanes(row: &[f32]) -> f32 {
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

wide! {
    /// The row replaced by its softmax (max, the vectorized exp, one scale by the sum).
    #[cfg(feature = "flex")]
    pub fn softmax(row: &mut [f32]) {
        let max = max(row);
        row.iter_mut().for_each(|x| *x = exp(*x - max));
        let inv = 1.0 / sum_lanes(row);
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

wide! {
    /// The row replaced by e^(x − m), its sum returned (in eight lanes): a tile of Flex's
    /// attention forward, whose online softmax rescales later.
    #[cfg(feature = "flex")]
    pub fn exp_shifted_sum(row: &mut [f32], m: f32) -> f32 {
        row.iter_mut().for_each(|x| *x = exp(*x - m));
        sum_lanes(row)
    }
}

wide! {
    /// The row replaced by scale · e^(x − shift) (the LM head's −g·softmax).
    #[cfg(feature = "flex")]
    pub fn scaled_exp(row: &mut [f32], shift: f32, scale: f32) {
        row.iter_mut().for_each(|x| *x = scale * exp(*x - shift));
    }
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

/// e^x to about 2 ulp for x in [−87, 88.3]: 2^n · e^r with n = round(x / ln 2),
/// |r| <= ln 2 / 2, e^r by its Taylor series to r^6 (error below 1.3e-7 relative); 0 below
/// −87 (and for −inf, masked keys), +inf from 88.4 (where 2^n overflows; e^x is past f32's
/// range from 88.73). Plain arithmetic and no branch, so the loops it sits in vectorize.
#[inline]
pub fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let xc = x.clamp(-87.0, 88.5);
    let n = (xc * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (xc - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from n + 127 as the low bits of ROUND's mantissa (integer ops, no float->int cast;
    // n + 127 = 255 is +inf's exponent).
    let scale = f32::from_bits(((n + 127.0 + ROUND).to_bits() - ROUND.to_bits()) << 23);
    // Below −87 the bits of 0 (a select, not a branch: a branch stops the vectorizer).
    f32::from_bits((p * scale).to_bits() & if x < -87.0 { 0 } else { u32::MAX })
}

wide! {
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
}

wide! {
    /// out = silu(gate) ∘ up, element by element (the MLP's activation on Flex).
    #[cfg(feature = "flex")]
    pub fn silu_mul(out: &mut [f32], gate: &[f32], up: &[f32]) {
        out.iter_mut().zip(gate).zip(up).for_each(|((o, &g), &u)| *o = g / (1.0 + exp(-g)) * u);
    }
}

wide! {
    /// [`silu_mul`]'s gradients of `gate` and `up` from the output's `d_out`.
    #[cfg(feature = "flex")]
    pub fn silu_mul_grad(d_gate: &mut [f32], d_up: &mut [f32], gate: &[f32], up: &[f32], d_out: &[f32]) {
        let n = gate.len(); // the slices cut to it, so that the loop has no bounds checks
        let (d_gate, d_up, up, d_out) = (&mut d_gate[..n], &mut d_up[..n], &up[..n], &d_out[..n]);
        for i in 0..n {
            let (g, s) = (gate[i], 1.0 / (1.0 + exp(-gate[i])));
            d_gate[i] = d_out[i] * up[i] * s * (1.0 + g * (1.0 - s));
            d_up[i] = d_out[i] * g * s;
        }
    }
}
