//! A decoding step's host side: each row's token (greedy, or drawn at a temperature with
//! top-k / top-p) and its log-probability under the sampling policy, a row a core. One
//! pass finds a row's maximum and one computes its weights e^((x - max) / T), which serve
//! the draw and the log-probability's normalizer alike; top-p selects its set rather than
//! sorting the vocabulary.
use crate::generate::SamplingConfig;
use crate::lanes;
use rand::rngs::StdRng;
use rand::Rng;
use rayon::prelude::*;

/// The temperature of the distribution a row is drawn from: greedy decoding (0) is scored
/// under the model's own distribution (1).
pub fn policy_temperature(temperature: f32) -> f32 {
    if temperature > 0.0 { temperature } else { 1.0 }
}

/// One decoding step's tokens and log-probabilities for `rngs.len()` rows of `vocab` logits
/// each ([`sample_scored`] a row, rows on rayon's threads).
pub fn pick_rows(logits: &[f32], vocab: usize, rngs: &mut [&mut StdRng], cfg: &SamplingConfig) -> Vec<(u32, f32)> {
    rngs.par_iter_mut().zip(logits.par_chunks(vocab)).map(|(rng, row)| sample_scored(row, cfg, rng)).collect()
}

/// log-softmax of `logits / temperature` at `index`, computed stably in f64 (the
/// definition, for scoring a single token).
pub fn logprob(logits: &[f32], index: usize, temperature: f32) -> f32 {
    let t = temperature as f64;
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64 / t;
    let lse = logits.iter().map(|&x| (x as f64 / t - max).exp()).sum::<f64>().ln() + max;
    (logits[index] as f64 / t - lse) as f32
}

/// The token [`sample_scored`] draws.
pub fn sample(logits: &[f32], cfg: &SamplingConfig, rng: &mut StdRng) -> u32 {
    sample_scored(logits, cfg, rng).0
}

/// Greedy (first maximum, like torch.argmax) at temperature 0; otherwise temperature,
/// then top-k, then top-p (the smallest set of the most likely tokens whose mass reaches
/// p, at least one; ties go to the lower token id). With the token comes its
/// log-probability under softmax(logits / [`policy_temperature`]), before top-k / top-p.
pub fn sample_scored(logits: &[f32], cfg: &SamplingConfig, rng: &mut StdRng) -> (u32, f32) {
    let t = policy_temperature(cfg.temperature);
    let max = lanes::max(logits);
    let weights: Vec<f32> = logits.iter().map(|&x| lanes::exp((x - max) / t)).collect();
    let z = lanes::sum_f64(&weights);
    let token = if cfg.temperature <= 0.0 {
        logits.iter().position(|&x| x == max).unwrap_or(0)
    } else {
        // top-k = 0 or at least the vocabulary: off.
        let top_k = if cfg.top_k < logits.len() { cfg.top_k } else { 0 };
        if top_k == 0 && cfg.top_p >= 1.0 {
            draw(&weights, z, rng) // the whole distribution, in vocabulary order
        } else {
            filtered(logits, &weights, z, top_k, cfg.top_p, rng)
        }
    };
    (token as u32, ((logits[token] - max) as f64 / t as f64 - z.ln()) as f32)
}

/// A draw from top-k, then top-p, of the distribution `weights` (e^((x - max) / T), sum `z`).
fn filtered(logits: &[f32], weights: &[f32], z: f64, top_k: usize, top_p: f32, rng: &mut StdRng) -> usize {
    // Candidates as (logit, id), in the vocabulary's order: more likely first, ties to the
    // lower id (as a stable sort would put them).
    let before = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let mut cand: Vec<(f32, u32)> = if top_k > 0 {
        // One pass that keeps what may still be in the top k: at 2k kept, the best k stay
        // and the k-th becomes the bar (most tokens fail one comparison with it).
        let k = top_k;
        let best = |kept: &mut Vec<(f32, u32)>| {
            kept.select_nth_unstable_by(k - 1, before);
            kept.truncate(k);
        };
        let mut kept: Vec<(f32, u32)> = Vec::with_capacity(2 * k);
        let mut bar = f32::NEG_INFINITY;
        for (&x, i) in logits.iter().zip(0..) {
            if x >= bar {
                kept.push((x, i));
                if kept.len() == 2 * k {
                    best(&mut kept);
                    bar = kept[k - 1].0;
                }
            }
        }
        if kept.len() > k {
            best(&mut kept);
        }
        kept
    } else if top_p < 1.0 {
        // Only the head of the distribution can hold the top-p set: the tokens within a
        // factor 1e3 (else 1e6, 1e9) of the most likely, once their mass reaches p.
        let target = top_p as f64 * z;
        let cut = [1e-3f32, 1e-6, 1e-9].into_iter().find(|&c| weights.iter().map(|&w| if w >= c { w as f64 } else { 0.0 }).sum::<f64>() >= target).unwrap_or(0.0);
        logits.iter().zip(weights).zip(0..).filter(|&((_, &w), _)| w >= cut).map(|((&x, _), i)| (x, i)).collect()
    } else {
        unreachable!("sample_scored draws unfiltered rows itself")
    };
    if top_p < 1.0 {
        // p of what top-k kept, or of everything (the head filter dropped only the tail).
        let mass = if top_k > 0 { cand.iter().map(|c| weights[c.1 as usize] as f64).sum() } else { z };
        let target = top_p as f64 * mass;
        let keep = top_p_prefix(&mut cand, |c| weights[c.1 as usize] as f64, target, before);
        cand.truncate(keep);
    }
    let w: Vec<f32> = cand.iter().map(|c| weights[c.1 as usize]).collect();
    cand[draw(&w, lanes::sum_f64(&w), rng)].1 as usize
}

/// Reorders `items` so that its first m are the first m in `order`, for the least m whose
/// mass reaches `target` (all of them if none does), and returns m: a selection by halves
/// (expected linear time), where sorting 152K candidates would cost 10 ms a row.
fn top_p_prefix<T>(items: &mut [T], mass: impl Fn(&T) -> f64, target: f64, order: impl Fn(&T, &T) -> std::cmp::Ordering) -> usize {
    // items[..lo] come first in `order` and weigh `acc` < target; the answer is in (lo, hi].
    let (mut lo, mut hi, mut acc) = (0, items.len(), 0.0);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        items[lo..hi].select_nth_unstable_by(mid - lo, &order);
        let left: f64 = items[lo..mid].iter().map(&mass).sum();
        if acc + left >= target {
            hi = mid;
        } else {
            acc += left;
            lo = mid;
        }
    }
    hi
}

/// An index drawn with probability proportional to its weight (`total` their sum; the last
/// with weight, should rounding leave the draw past the end).
fn draw(weights: &[f32], total: f64, rng: &mut StdRng) -> usize {
    let mut u = rng.random::<f64>() * total;
    for (i, &w) in weights.iter().enumerate() {
        u -= w as f64;
        if u <= 0.0 {
            return i;
        }
    }
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}
