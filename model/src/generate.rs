//! Batched generation: prompts of different lengths are left-padded into one batch, the
//! KV cache (optional, for checking) grows by one position per step, and each row samples
//! with its own seeded RNG so a row's tokens do not depend on its neighbours. Returns the
//! tokens exactly as generated and the log-probability of each under the sampling policy:
//! softmax(logits / temperature), before top-k/top-p filtering (temperature 1 when greedy),
//! the numbers `score` gives at temperature 1, which is what RL's importance ratios need.
//! A caller that continues rows (a rollout's next turn) passes each row's [`RowCache`]
//! back in, so only the tokens after what it covers are encoded again.
use crate::qwen3::{AttnMask, KvCache, Qwen3};
use crate::tokenizer::Tokenizer;
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

pub use crate::sampling::{logprob, pick_rows, policy_temperature, sample, sample_scored};

#[derive(Debug, Clone)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// 1.0 = off.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    pub seed: u64,
    pub stop_token_ids: Vec<u32>,
    /// Generation of a row ends once its decoded text contains one of these (`</Code>`).
    pub stop_strings: Vec<String>,
    /// Reuse keys/values of earlier positions (false recomputes everything each step).
    pub use_cache: bool,
    /// Positions the KV cache grows by ([`KvCache`]): [`crate::DEFAULT_KV_BLOCK`], 256.
    pub kv_block: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            stop_token_ids: vec![],
            stop_strings: vec![],
            use_cache: true,
            kv_block: crate::DEFAULT_KV_BLOCK,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    StopToken(u32),
    StopString(String),
    Length,
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids, including the stop token when one ended the row.
    pub tokens: Vec<u32>,
    /// `log p(token)` of each generated token under softmax(logits / temperature).
    pub logprobs: Vec<f32>,
    pub finish: Finish,
}

/// One row's keys and values kept from one call to the next: `ids` are the tokens they
/// cover (the row's prompt and generated tokens but the last, which was never fed).
pub struct RowCache<B: Backend> {
    pub ids: Vec<u32>,
    kv: KvCache<B>,
}

/// Generates a continuation of every prompt. `tokenizer` is needed only for stop strings.
pub fn generate<B: crate::ModelBackend>(
    model: &Qwen3<B>,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
) -> Vec<Generation> {
    generate_with(model, tokenizer, prompts, cfg, None, |_| {}, |_, _| {})
}

/// [`generate`], calling `on_step(step)` after each new position (for progress bars) and
/// `on_done(row, generation)` the moment a row stops by a stop token or string, while the
/// others go on (a rollout starts that row's cell then). With `caches` (one entry per
/// prompt, and `cfg.use_cache`), entry i going in may hold a cache whose ids start prompt
/// i: the part they share is not encoded again; coming out it holds row i's cache.
pub fn generate_with<B: crate::ModelBackend>(
    model: &Qwen3<B>,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    mut caches: Option<&mut [Option<RowCache<B>>]>,
    mut on_step: impl FnMut(usize),
    mut on_done: impl FnMut(usize, &Generation),
) -> Vec<Generation> {
    assert!(prompts.iter().all(|p| !p.is_empty()), "every prompt needs at least one token");
    assert!(cfg.stop_strings.is_empty() || tokenizer.is_some(), "stop strings need a tokenizer");
    let device = model.device();
    let n = prompts.len();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    // The whole batch so far, left-padded with id 0 (masked out).
    let mut seqs: Vec<Vec<u32>> = prompts.iter().zip(&pads).map(|(p, &pad)| [vec![0; pad], p.clone()].concat()).collect();
    let mut rngs: Vec<StdRng> = (0..n).map(|i| StdRng::seed_from_u64(cfg.seed.wrapping_add(i as u64))).collect();
    let mut out: Vec<Generation> =
        (0..n).map(|_| Generation { tokens: vec![], logprobs: vec![], finish: Finish::Length }).collect();
    let mut done = vec![false; n];
    let mut cache = cfg.use_cache.then(|| KvCache::new(model.num_layers(), cfg.kv_block));
    if !cfg.use_cache {
        caches = None;
    }
    if let (Some(cache), Some(rows)) = (cache.as_mut(), caches.as_deref_mut()) {
        assert_eq!(rows.len(), n, "one cache entry per prompt");
        *cache = reused(rows, prompts, &pads, cfg.kv_block).unwrap_or_else(|| KvCache::new(model.num_layers(), cfg.kv_block));
    }
    let max_stop_chars = cfg.stop_strings.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    // Rows still generating (indices into `prompts`); finished rows leave the batch and
    // the cache, so a long row does not make the others pay for its steps.
    let mut live: Vec<usize> = (0..n).collect();

    for step in 0..cfg.max_new_tokens {
        let m = live.len();
        let total = seqs[live[0]].len();
        // With a cache only the newest position is fed, except on the first step.
        let start = match &cache {
            Some(c) if !c.is_empty() => c.len(),
            _ => 0,
        };
        let ids: Vec<i64> = live.iter().flat_map(|&i| seqs[i][start..].iter().map(|&t| t as i64)).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [m, total - start]), &device);
        let positions: Vec<Vec<usize>> =
            live.iter().map(|&i| (start..total).map(|j| j.saturating_sub(pads[i])).collect()).collect();
        let pads_at = |i: usize| pads[i];
        let mask = if live.iter().any(|&i| pads[i] > 0) {
            let valid: Vec<bool> = live.iter().flat_map(|&i| (0..total).map(move |j| j >= pads_at(i))).collect();
            AttnMask::KeyPadding(Tensor::from_data(TensorData::new(valid, [m, total]), &device))
        } else {
            AttnMask::Causal
        };
        let hidden = model.forward_hidden(tokens, &positions, &mask, cache.as_mut());
        let [_, t, h] = hidden.dims();
        let last = hidden.slice([0..m, t - 1..t, 0..h]);
        let logits = model.logits(last).into_data().convert::<f32>().to_vec::<f32>().expect("f32 logits");
        let vocab = logits.len() / m;
        // The live rows' RNGs, in order.
        let mut live_rngs: Vec<&mut StdRng> = rngs.iter_mut().enumerate().filter(|(i, _)| live.binary_search(i).is_ok()).map(|(_, r)| r).collect();
        let picks = pick_rows(&logits, vocab, &mut live_rngs, cfg);
        for (r, (&i, (token, lp))) in live.iter().zip(picks).enumerate() {
            seqs[i].push(token);
            let g = &mut out[i];
            g.tokens.push(token);
            g.logprobs.push(lp);
            if cfg.stop_token_ids.contains(&token) {
                g.finish = Finish::StopToken(token);
                done[i] = true;
            } else if let (Some(tok), true) = (tokenizer, max_stop_chars > 0) {
                // Decode a tail long enough to hold any stop string (a token is >= 1 char
                // once complete) and look for one that the newest token completed.
                let tail = &g.tokens[g.tokens.len().saturating_sub(max_stop_chars + 8)..];
                let text = tok.decode(tail).unwrap_or_default();
                if let Some(s) = cfg.stop_strings.iter().find(|s| text.contains(s.as_str())) {
                    g.finish = Finish::StopString(s.clone());
                    done[i] = true;
                }
            }
            if done[i] {
                on_done(i, g);
                keep_row(&mut caches, cache.as_ref(), i, r, &seqs[i][pads[i]..]);
            }
        }
        on_step(step + 1);
        let keep: Vec<usize> = (0..m).filter(|&r| !done[live[r]]).collect();
        if keep.is_empty() {
            break;
        }
        if step + 1 == cfg.max_new_tokens {
            for &r in &keep {
                keep_row(&mut caches, cache.as_ref(), live[r], r, &seqs[live[r]][pads[live[r]]..]);
            }
        }
        if keep.len() < m {
            if let Some(c) = cache.as_mut() {
                c.keep_rows(&keep);
            }
            live = keep.iter().map(|&r| live[r]).collect();
        }
    }
    out
}

/// The batch cache made of the rows' own caches, as far as each agrees with its prompt (all
/// but the prompt's last token at most: its logits are needed). The batch starts at the
/// first position some row has not cached; rows that cached more recompute the rest. None
/// when that is position 0.
fn reused<B: Backend>(rows: &mut [Option<RowCache<B>>], prompts: &[Vec<u32>], pads: &[usize], block: usize) -> Option<KvCache<B>> {
    let cached: Vec<usize> = rows
        .iter()
        .zip(prompts)
        .map(|(c, p)| c.as_ref().map_or(0, |c| c.ids.iter().zip(p).take_while(|(a, b)| a == b).count().min(p.len() - 1)))
        .collect();
    let start = cached.iter().zip(pads).map(|(c, p)| c + p).min()?;
    let parts: Vec<_> = (0..rows.len())
        .map(|i| {
            let zeros = pads[i].min(start);
            (zeros, rows[i].as_ref().map(|c| &c.kv), start - zeros)
        })
        .collect();
    let batch = (start > 0).then(|| KvCache::from_rows(&parts, block));
    rows.iter_mut().for_each(|c| *c = None);
    batch
}

/// Hands row `i` (batch row `r`) its cache of `ids` (its sequence without padding or the
/// newest token), when the caller keeps caches.
fn keep_row<B: Backend>(caches: &mut Option<&mut [Option<RowCache<B>>]>, cache: Option<&KvCache<B>>, i: usize, r: usize, seq: &[u32]) {
    if let (Some(rows), Some(cache)) = (caches.as_deref_mut(), cache) {
        let from = cache.len() + 1 - seq.len();
        rows[i] = Some(RowCache { ids: seq[..seq.len() - 1].to_vec(), kv: cache.row(r, from) });
    }
}
