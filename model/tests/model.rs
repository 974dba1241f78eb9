//! The model crate against independent references: transformers' numbers on random
//! checkpoints (scripts/make_parity_fixtures.py), Python tokenizers / transformers chat
//! rendering on the real Qwen3 tokenizer (scripts/make_tokenizer_fixtures.py), and
//! llama.cpp's tokenizer test cases. Assets come from scripts/setup-assets.sh.
use burn::prelude::*;
use model::{generate, Checkpoint, DefaultBackend as B, Error, Finish, Qwen3, Qwen3Config, SamplingConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// burn's cubecl backend on wgpu: the CUDA build's kernels and `ModelBackend`, run on
/// Mesa's lavapipe.
#[cfg(feature = "wgpu-kernels")]
type W = burn_cubecl::CubeBackend<cubecl::wgpu::WgpuRuntime, f32, i32, u32>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn asset(rel: &str) -> PathBuf {
    let p = root().join("assets").join(rel);
    assert!(p.exists(), "{} is missing: run scripts/setup-assets.sh", p.display());
    p
}

fn parity_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(fixtures().join("parity")).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert_eq!(cases.len(), 4, "expected the four parity fixtures");
    cases
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn load(dir: &Path) -> Checkpoint<B> {
    Checkpoint::load(dir, &Default::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn logprobs(model: &Qwen3<B>, rows: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let t = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().map(|&x| x as i64).collect();
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [rows.len(), t]), &Default::default());
    let lp = model.next_token_logprobs(tokens).0.into_data().to_vec::<f32>().unwrap();
    lp.chunks(t - 1).map(|c| c.to_vec()).collect()
}

// ---------------------------------------------------------------- parity with transformers

#[test]
fn logprobs_match_transformers_on_every_shape() {
    for dir in parity_cases() {
        let ck = load(&dir);
        let exp = read_json(&dir.join("expected.json"));
        let rows: Vec<Vec<u32>> = exp["input_ids"].as_array().unwrap().iter().map(ids_of).collect();
        let ours = logprobs(&ck.model, &rows);
        let mut worst = 0f32;
        for (b, row) in exp["next_token_logprobs"].as_array().unwrap().iter().enumerate() {
            for (i, v) in row.as_array().unwrap().iter().enumerate() {
                worst = worst.max((ours[b][i] - v.as_f64().unwrap() as f32).abs());
            }
        }
        assert!(worst < 1e-4, "{}: max |Δ log-prob| = {worst}", dir.display());

        // The same through the training head (chunked, tied or untied weight).
        let t = rows[0].len();
        let positions = vec![(0..t).collect::<Vec<_>>(); 2];
        let flat: Vec<i64> = rows.iter().flatten().map(|&x| x as i64).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(flat.clone(), [2, t]), &Default::default());
        let hidden = ck.model.forward_hidden(tokens, &positions, &model::AttnMask::Causal, None);
        let h = hidden.dims()[2];
        let hidden = Tensor::cat(vec![hidden.clone().slice([0..1, 0..t - 1, 0..h]), hidden.slice([1..2, 0..t - 1, 0..h])], 1).reshape([2 * (t - 1), h]);
        let targets: Vec<i64> = rows.iter().flat_map(|r| r[1..].iter().map(|&x| x as i64)).collect();
        let targets = Tensor::from_data(TensorData::new(targets, [2 * (t - 1)]), &Default::default());
        let (lp, _) = ck.model.token_logprobs(hidden, targets, 1.0);
        let want = exp["next_token_logprobs"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32));
        let worst = lp.into_data().to_vec::<f32>().unwrap().iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "{}: training head: max |Δ log-prob| = {worst}", dir.display());

        // Top-5 logits at the last position.
        let logits = ck.model.forward(Tensor::from_data(TensorData::new(flat, [2, t]), &Default::default()));
        let v = ck.config.vocab_size;
        let last = logits.slice([0..2, t - 1..t, 0..v]).into_data().to_vec::<f32>().unwrap();
        for (b, top) in exp["last_top5"].as_array().unwrap().iter().enumerate() {
            for pair in top.as_array().unwrap() {
                let (id, val) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap() as f32);
                assert!((last[b * v + id] - val).abs() < 1e-4, "{}: logit of {id}", dir.display());
            }
        }
    }
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_cache() {
    for dir in parity_cases() {
        let ck = load(&dir);
        let exp = read_json(&dir.join("expected.json"));
        let prompt = ids_of(&exp["greedy_prompt"]);
        let want = ids_of(&exp["greedy_tokens"]);
        for use_cache in [true, false] {
            let cfg = SamplingConfig { max_new_tokens: want.len(), use_cache, ..Default::default() };
            let got = generate(&ck.model, None, &[prompt.clone()], &cfg);
            assert_eq!(got[0].tokens, want, "{} (cache: {use_cache})", dir.display());
            assert_eq!(got[0].finish, Finish::Length);
        }
    }
}

#[test]
fn batched_sampling_with_cache_equals_recompute_and_single_rows() {
    let ck = load(&fixtures().join("parity/gqa4_yarn_f16"));
    let prompts = vec![vec![5, 9, 13, 40, 41, 7, 8], vec![17], vec![3, 4, 60, 61]];
    let cfg = SamplingConfig { max_new_tokens: 12, temperature: 0.9, top_p: 0.95, top_k: 40, seed: 7, ..Default::default() };
    let cached = generate(&ck.model, None, &prompts, &cfg);
    let recomputed = generate(&ck.model, None, &prompts, &SamplingConfig { use_cache: false, ..cfg.clone() });
    for (a, b) in cached.iter().zip(&recomputed) {
        assert_eq!(a.tokens, b.tokens);
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
    // Left padding must not change a row: each prompt alone (seed offset = its row) agrees.
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate(&ck.model, None, &[p.clone()], &SamplingConfig { seed: cfg.seed + i as u64, ..cfg.clone() });
        assert_eq!(alone[0].tokens, cached[i].tokens, "row {i}");
    }
    // Sampling is seeded: another seed gives another continuation somewhere.
    let other = generate(&ck.model, None, &prompts, &SamplingConfig { seed: 8, ..cfg.clone() });
    assert!(other.iter().zip(&cached).any(|(a, b)| a.tokens != b.tokens));
}

#[test]
fn generated_logprobs_equal_teacher_forced_scores() {
    let ck = load(&fixtures().join("parity/untied_gqa2_headdim_bf16_sharded"));
    let prompt = vec![10, 20, 30, 40];
    let cfg = SamplingConfig { max_new_tokens: 8, temperature: 1.0, seed: 3, ..Default::default() };
    let g = &generate(&ck.model, None, &[prompt.clone()], &cfg)[0];
    let full: Vec<u32> = prompt.iter().chain(&g.tokens).cloned().collect();
    let scored = &logprobs(&ck.model, &[full])[0][prompt.len() - 1..];
    for (a, b) in g.logprobs.iter().zip(scored) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    // Sampling at temperature 0.6: each log-prob is of softmax(logits / 0.6), the policy
    // that drew it (computed here in f64 from the teacher-forced logits).
    let cfg = SamplingConfig { temperature: 0.6, ..cfg };
    let g = &generate(&ck.model, None, &[prompt.clone()], &cfg)[0];
    let full: Vec<u32> = prompt.iter().chain(&g.tokens).cloned().collect();
    let n = full.len();
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(full.iter().map(|&x| x as i64).collect(), [1, n]), &Default::default());
    let logits = ck.model.forward(tokens).into_data().to_vec::<f32>().unwrap();
    let v = logits.len() / n;
    for (k, (&tok, &got)) in g.tokens.iter().zip(&g.logprobs).enumerate() {
        let row: Vec<f64> = logits[(prompt.len() - 1 + k) * v..][..v].iter().map(|&x| x as f64 / 0.6).collect();
        let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
        let want = row[tok as usize] - lse;
        assert!((got as f64 - want).abs() < 1e-4, "token {k}: {got} vs {want}");
    }
}

#[test]
fn rows_that_stop_leave_the_batch_without_changing_the_others() {
    let ck = load(&fixtures().join("parity/gqa4_yarn_f16"));
    let prompts = vec![vec![5, 9, 13, 40, 41, 7, 8], vec![17], vec![3, 4, 60, 61], vec![22, 23]];
    let cfg = SamplingConfig { max_new_tokens: 16, temperature: 1.0, seed: 11, ..Default::default() };
    let free = generate(&ck.model, None, &prompts, &cfg);
    // Row 1 stops at its third token; rows that never sample it run on, in a smaller batch.
    let stop = free[1].tokens[2];
    let cfg = SamplingConfig { stop_token_ids: vec![stop], ..cfg };
    for use_cache in [true, false] {
        let cfg = SamplingConfig { use_cache, ..cfg.clone() };
        // `on_done` hears of each stopped row at the step it stopped, with its tokens.
        let step = std::cell::Cell::new(0);
        let mut heard = vec![];
        let batch = model::generate_with(&ck.model, None, &prompts, &cfg, None, |s| step.set(s), |row, g| heard.push((row, step.get() + 1, g.tokens.clone())));
        assert_eq!(batch[1].tokens.len(), 3);
        let stopped: Vec<_> = batch.iter().enumerate().filter(|(_, g)| g.finish != model::Finish::Length).map(|(i, g)| (i, g.tokens.len(), g.tokens.clone())).collect();
        heard.sort();
        assert_eq!(heard, stopped);
        assert!(batch.iter().any(|g| g.tokens.len() == 16), "some row runs past the stop");
        for (i, p) in prompts.iter().enumerate() {
            let alone = &generate(&ck.model, None, &[p.clone()], &SamplingConfig { seed: cfg.seed + i as u64, ..cfg.clone() })[0];
            assert_eq!(alone.tokens, batch[i].tokens, "row {i}, cache {use_cache}");
            for (x, y) in alone.logprobs.iter().zip(&batch[i].logprobs) {
                assert!((x - y).abs() < 1e-3, "row {i}: {x} vs {y}");
            }
        }
    }
}

#[test]
fn continuing_rows_from_their_caches_equals_encoding_them_whole() {
    // A rollout's next turn: each row's prompt is its last prompt, what it generated and an
    // observation. Rows that bring their cache encode only what it does not cover; the
    // reference encodes every prompt whole (itself checked against transformers above).
    let ck = load(&fixtures().join("parity/gqa4_yarn_f16"));
    let prompts = vec![vec![5, 9, 13, 40, 41, 7, 8], vec![17], vec![3, 4, 60, 61], vec![22, 23]];
    let cfg = SamplingConfig { max_new_tokens: 6, temperature: 1.0, seed: 3, ..Default::default() };
    let mut caches: Vec<Option<model::RowCache<B>>> = (0..4).map(|_| None).collect();
    let first = model::generate_with(&ck.model, None, &prompts, &cfg, Some(&mut caches), |_| {}, |_, _| {});
    for ((p, g), c) in prompts.iter().zip(&first).zip(&caches) {
        // A cache covers the prompt and every generated token but the last (never fed).
        assert_eq!(c.as_ref().unwrap().ids, [p.as_slice(), &g.tokens[..g.tokens.len() - 1]].concat());
    }
    let observation = [70u32, 71, 72];
    let next: Vec<Vec<u32>> = prompts.iter().zip(&first).enumerate().map(|(i, (p, g))| match i {
        // Row 1 keeps only part of what it generated (cut at the response limit): its
        // cache covers more than the new prompt shares with it.
        1 => [p.as_slice(), &g.tokens[..2], &observation].concat(),
        _ => [p.as_slice(), &g.tokens, &observation].concat(),
    }).collect();
    caches[2] = None; // and row 2 comes without a cache
    let cfg = SamplingConfig { max_new_tokens: 8, seed: 9, ..cfg };
    let whole = generate(&ck.model, None, &next, &cfg);
    let continued = model::generate_with(&ck.model, None, &next, &cfg, Some(&mut caches), |_| {}, |_, _| {});
    for (i, (a, b)) in continued.iter().zip(&whole).enumerate() {
        assert_eq!(a.tokens, b.tokens, "row {i}");
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            assert!((x - y).abs() < 1e-4, "row {i}: {x} vs {y}");
        }
        assert_eq!(caches[i].as_ref().unwrap().ids, [next[i].as_slice(), &a.tokens[..a.tokens.len() - 1]].concat());
    }
    // Greedy, the third turn from the second's caches.
    let cfg = SamplingConfig { temperature: 0.0, max_new_tokens: 5, ..cfg };
    let third: Vec<Vec<u32>> = next.iter().zip(&continued).map(|(p, g)| [p.as_slice(), &g.tokens, &observation].concat()).collect();
    let whole = generate(&ck.model, None, &third, &cfg);
    let continued = model::generate_with(&ck.model, None, &third, &cfg, Some(&mut caches), |_| {}, |_, _| {});
    for (i, (a, b)) in continued.iter().zip(&whole).enumerate() {
        assert_eq!(a.tokens, b.tokens, "row {i}");
    }
    // The cached keys and values are what is used (not recomputed): caches made by a model
    // whose first layer's values are doubled change every continuing row's log-probs.
    let mut other = load(&fixtures().join("parity/gqa4_yarn_f16")).model;
    let v = &mut other.layers[0].self_attn.v_proj.weight;
    *v = burn::module::Param::from_tensor(v.val() * 2.0);
    let mut foreign: Vec<Option<model::RowCache<B>>> = (0..4).map(|_| None).collect();
    model::generate_with(&other, None, &prompts, &SamplingConfig { max_new_tokens: 1, ..cfg.clone() }, Some(&mut foreign), |_| {}, |_, _| {});
    let lp = |caches: Option<&mut [Option<model::RowCache<B>>]>| model::generate_with(&ck.model, None, &prompts, &cfg, caches, |_| {}, |_, _| {});
    let (own, mixed) = (lp(None), lp(Some(&mut foreign)));
    for i in [0, 2, 3] {
        assert!((own[i].logprobs[0] - mixed[i].logprobs[0]).abs() > 1e-3, "row {i}: {} vs {}", own[i].logprobs[0], mixed[i].logprobs[0]);
    }
}

#[test]
fn a_cache_that_grows_past_its_blocks_equals_encoding_whole() {
    // The cache grows in blocks (CUDA's default, 256) and attention reads its spare
    // capacity masked. Rows that cross block boundaries, one left-padded by nearly a
    // block, then a second turn from their row caches crossing the next boundary, must
    // give what encoding every sequence whole gives.
    let ck = load(&fixtures().join("parity/gqa4_yarn_f16"));
    let block = 256u32;
    let long: Vec<u32> = (0..block - 6).map(|i| (i * 7 + 3) % 96).collect();
    let prompts = vec![long, vec![17, 18, 19]];
    let cfg = SamplingConfig { max_new_tokens: 12, temperature: 0.9, seed: 5, kv_block: block as usize, ..Default::default() };
    let check = |cached: &[model::Generation], whole: &[model::Generation]| {
        for (i, (a, b)) in cached.iter().zip(whole).enumerate() {
            assert_eq!(a.tokens, b.tokens, "row {i}");
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                assert!((x - y).abs() < 1e-4, "row {i}: {x} vs {y}");
            }
        }
    };
    let mut caches: Vec<Option<model::RowCache<B>>> = vec![None, None];
    let first = model::generate_with(&ck.model, None, &prompts, &cfg, Some(&mut caches), |_| {}, |_, _| {});
    check(&first, &generate(&ck.model, None, &prompts, &SamplingConfig { use_cache: false, ..cfg.clone() }));
    // Row 0's observation takes it past two blocks; row 1's stays short.
    let next: Vec<Vec<u32>> = prompts.iter().zip(&first).enumerate().map(|(i, (p, g))| {
        let observation: Vec<u32> = (0..if i == 0 { block + 20 } else { 4 }).map(|j| (j * 5 + 1) % 96).collect();
        [p.as_slice(), &g.tokens, &observation].concat()
    }).collect();
    assert!(next[0].len() > 2 * block as usize);
    let cfg = SamplingConfig { seed: 6, ..cfg };
    let continued = model::generate_with(&ck.model, None, &next, &cfg, Some(&mut caches), |_| {}, |_, _| {});
    check(&continued, &generate(&ck.model, None, &next, &SamplingConfig { use_cache: false, ..cfg.clone() }));
}

#[test]
fn sampling_draws_from_the_filtered_softmax() {
    // 200K draws per setting against softmax(logits / T) computed here, restricted to the
    // top k, or to the smallest head whose mass reaches p (renormalized): every token's
    // frequency within 5 standard errors (+ 1e-3), tokens outside the set never drawn.
    use rand::{Rng, SeedableRng};
    let logits = [1.0f32, 3.0, 2.5, -1.0, 0.0, 2.9, 0.5, 1.5];
    let softmax = |t: f32, keep: &[usize]| {
        let w: Vec<f64> = (0..logits.len()).map(|i| if keep.contains(&i) { ((logits[i] / t) as f64).exp() } else { 0.0 }).collect();
        let z: f64 = w.iter().sum();
        w.into_iter().map(|x| x / z).collect::<Vec<f64>>()
    };
    let all: Vec<usize> = (0..logits.len()).collect();
    // By logit: 1 (3.0), 5 (2.9), 2 (2.5), 7 (1.5), 0, 6, 4, 3.
    let cases = [
        (1.0, 0, 1.0, softmax(1.0, &all)),
        (0.5, 0, 1.0, softmax(0.5, &all)),
        (1.0, 3, 1.0, softmax(1.0, &[1, 5, 2])),
        // At T = 1 the mass of {1, 5, 2} is 0.83 and of {1, 5, 2, 7} 0.91: p = 0.85 keeps four.
        (1.0, 0, 0.85, softmax(1.0, &[1, 5, 2, 7])),
    ];
    let mass3: f64 = [1, 5, 2].iter().map(|&i| softmax(1.0, &all)[i]).sum();
    assert!(mass3 < 0.85 && mass3 + softmax(1.0, &all)[7] >= 0.85, "the top-p case's set is {{1, 5, 2, 7}}");
    let n = 200_000;
    for (temperature, top_k, top_p, want) in cases {
        let cfg = SamplingConfig { temperature, top_k, top_p, ..Default::default() };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[model::generate::sample(&logits, &cfg, &mut rng) as usize] += 1;
        }
        for (i, (&c, &p)) in counts.iter().zip(&want).enumerate() {
            let f = c as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((f - p).abs() <= 5.0 * se + 1e-3, "T {temperature} k {top_k} p {top_p}: token {i} drawn {f:.4}, want {p:.4}");
            if p == 0.0 {
                assert_eq!(c, 0, "token {i} is outside the set");
            }
        }
    }
    // A long tail (1000 tokens at -6, 4% of the mass together): p = 0.9 is reached by the
    // head alone; p = 0.99 takes the head and the first ~760 tail tokens (ties go by index).
    // Against the definition: sort everything, keep the shortest prefix reaching p.
    let long: Vec<f32> = logits.iter().copied().chain(std::iter::repeat_n(-6.0, 1000)).collect();
    for top_p in [0.9f32, 0.99] {
        let mut order: Vec<usize> = (0..long.len()).collect();
        order.sort_by(|&a, &b| long[b].total_cmp(&long[a]).then(a.cmp(&b)));
        let w: Vec<f64> = long.iter().map(|&x| (x as f64).exp()).collect();
        let z: f64 = w.iter().sum();
        let (mut mass, mut keep) = (0.0, vec![]);
        for &i in &order {
            keep.push(i);
            mass += w[i] / z;
            if mass >= top_p as f64 {
                break;
            }
        }
        let kept: f64 = keep.iter().map(|&i| w[i]).sum();
        let cfg = SamplingConfig { temperature: 1.0, top_p, ..Default::default() };
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let n = n / 4;
        let mut counts = vec![0usize; long.len()];
        for _ in 0..n {
            counts[model::generate::sample(&long, &cfg, &mut rng) as usize] += 1;
        }
        assert!(counts.iter().enumerate().all(|(i, &c)| c == 0 || keep.contains(&i)), "p {top_p}: a token outside the set was drawn");
        for &i in &keep[..8.min(keep.len())] {
            let (f, p) = (counts[i] as f64 / n as f64, w[i] / kept);
            assert!((f - p).abs() <= 5.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-3, "p {top_p}: token {i} drawn {f:.4}, want {p:.4}");
        }
        let tail: usize = keep.iter().filter(|&&i| i >= 8).map(|&i| counts[i]).sum();
        let want_tail: f64 = keep.iter().filter(|&&i| i >= 8).map(|&i| w[i] / kept).sum();
        assert!((tail as f64 / n as f64 - want_tail).abs() < 5e-3, "p {top_p}: tail drawn {}, want {want_tail:.4}", tail as f64 / n as f64);
        assert_eq!(keep.len() > 8, top_p > 0.95);
    }
    // Top-k ties go to the lower ids as well: k = 12 keeps the head and tail tokens 8..12,
    // each of those four drawn as often as the others.
    let cfg = SamplingConfig { temperature: 1.0, top_k: 12, ..Default::default() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut counts = vec![0usize; long.len()];
    for _ in 0..n {
        counts[model::generate::sample(&long, &cfg, &mut rng) as usize] += 1;
    }
    let head: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
    let p_tail = (-6f64).exp() / (head + 4.0 * (-6f64).exp());
    assert!(counts[12..].iter().all(|&c| c == 0), "top-k: a token past the first twelve was drawn");
    for i in 8..12 {
        let f = counts[i] as f64 / n as f64;
        assert!((f - p_tail).abs() <= 5.0 * (p_tail / n as f64).sqrt() + 1e-4, "top-k: tail token {i} drawn {f:.5}, want {p_tail:.5}");
    }
    // Greedy: the first maximum.
    assert_eq!(model::generate::sample(&[0.0, 2.0, 2.0], &SamplingConfig { temperature: 0.0, ..Default::default() }, &mut rand::rngs::StdRng::seed_from_u64(0)), 1);
    // Each token comes with its log-probability under softmax(logits / T) before filtering
    // (T = 1 when greedy), as the definition computes it in f64, at Qwen3's vocabulary.
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let row: Vec<f32> = (0..151_936).map(|_| 3.0 * (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5)).collect();
    for (temperature, top_k, top_p) in [(0.0, 0, 1.0), (0.7, 0, 1.0), (0.7, 50, 1.0), (1.0, 0, 0.9), (0.5, 40, 0.8)] {
        let cfg = SamplingConfig { temperature, top_k, top_p, ..Default::default() };
        for _ in 0..20 {
            let (token, lp) = model::generate::sample_scored(&row, &cfg, &mut rng);
            let want = model::generate::logprob(&row, token as usize, model::policy_temperature(temperature));
            assert!((lp - want).abs() < 1e-5, "T {temperature} k {top_k} p {top_p}: token {token} log-prob {lp}, want {want}");
        }
    }
}

#[test]
fn stop_token_ends_a_row_and_is_kept() {
    let ck = load(&fixtures().join("parity/tied_gqa1_f32"));
    let exp = read_json(&fixtures().join("parity/tied_gqa1_f32/expected.json"));
    let want = ids_of(&exp["greedy_tokens"]);
    let stop = want[4];
    let cfg = SamplingConfig { max_new_tokens: 10, stop_token_ids: vec![stop], ..Default::default() };
    let g = &generate(&ck.model, None, &[ids_of(&exp["greedy_prompt"])], &cfg)[0];
    let end = want.iter().position(|&t| t == stop).unwrap() + 1;
    assert_eq!(g.tokens, want[..end]);
    assert_eq!(g.finish, Finish::StopToken(stop));
}

// ---------------------------------------------------------------- save / load

/// name -> (dtype, shape, bytes) of every tensor in a checkpoint folder.
fn tensors_on_disk(dir: &Path) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&p).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            for (name, view) in st.tensors() {
                out.insert(name, (format!("{:?}", view.dtype()), view.shape().to_vec(), view.data().to_vec()));
            }
        }
    }
    out
}

#[test]
fn save_then_load_is_bit_identical_to_the_transformers_files() {
    for dir in parity_cases() {
        let ck = load(&dir);
        let tmp = tempfile::tempdir().unwrap();
        // Shard small so every case exercises the index, whatever the source was.
        ck.save(tmp.path(), 16 * 1024).unwrap();
        assert!(tmp.path().join("model.safetensors.index.json").exists());
        assert_eq!(tensors_on_disk(&dir), tensors_on_disk(tmp.path()), "{}", dir.display());
        let index = read_json(&tmp.path().join("model.safetensors.index.json"));
        for (name, file) in index["weight_map"].as_object().unwrap() {
            let f = std::fs::read(tmp.path().join(file.as_str().unwrap())).unwrap();
            assert!(safetensors::SafeTensors::deserialize(&f).unwrap().tensor(name).is_ok(), "{name} not in {file}");
        }
        // And back: the reloaded model gives the same numbers and saves the same bytes.
        let again = load(tmp.path());
        let rows = vec![vec![3u32, 50, 7, 9, 11, 90]];
        assert_eq!(logprobs(&ck.model, &rows), logprobs(&again.model, &rows));
        let tmp2 = tempfile::tempdir().unwrap();
        again.save(tmp2.path(), usize::MAX).unwrap();
        assert!(tmp2.path().join("model.safetensors").exists());
        assert_eq!(tensors_on_disk(&dir), tensors_on_disk(tmp2.path()));
        let (a, b) = (read_json(&dir.join("config.json")), read_json(&tmp2.path().join("config.json")));
        assert_eq!(a, b, "config.json must round-trip");
    }
}

// ---------------------------------------------------------------- bad input

fn copy_dir(src: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    tmp
}

fn load_err(dir: &Path) -> String {
    match Checkpoint::<B>::load(dir, &Default::default()) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let p = dir.join("config.json");
    let mut v = read_json(&p);
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn bad_checkpoints_get_errors_naming_file_and_field() {
    let src = fixtures().join("parity/tied_gqa1_f32");

    let d = copy_dir(&src);
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("cannot read"), "{e}");

    let d = copy_dir(&src);
    std::fs::write(d.path().join("config.json"), "{\"vocab_size\": 96,").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("invalid JSON"), "{e}");

    let d = copy_dir(&src);
    edit_config(d.path(), |c| {
        c.insert("hidden_size".into(), "wide".into());
    });
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("`hidden_size`"), "{e}");

    let d = copy_dir(&src);
    edit_config(d.path(), |c| {
        c.remove("num_hidden_layers");
    });
    assert!(load_err(d.path()).contains("`num_hidden_layers`: missing"));

    let d = copy_dir(&src);
    edit_config(d.path(), |c| {
        c.insert("architectures".into(), serde_json::json!(["LlamaForCausalLM"]));
        c.insert("model_type".into(), "llama".into());
    });
    let e = load_err(d.path());
    assert!(e.contains("unsupported architecture `LlamaForCausalLM`"), "{e}");

    // Shape disagreeing with config.json: the tensor and both shapes are named.
    let d = copy_dir(&src);
    edit_config(d.path(), |c| {
        c.insert("intermediate_size".into(), 80.into());
    });
    let e = load_err(d.path());
    let want = "tensor `model.layers.0.mlp.down_proj.weight`: shape [32, 64], but config.json implies [32, 80]";
    assert!(e.contains("model.safetensors") && e.contains(want), "{e}");

    // A tensor missing: one more layer than the file holds.
    let d = copy_dir(&src);
    edit_config(d.path(), |c| {
        c.insert("num_hidden_layers".into(), 3.into());
    });
    let e = load_err(d.path());
    assert!(e.contains("model.layers.2.") && e.contains("missing"), "{e}");

    // A truncated file.
    let d = copy_dir(&src);
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors"), "{e}");

    // A shard listed in the index but gone.
    let d = copy_dir(&fixtures().join("parity/untied_gqa2_headdim_bf16_sharded"));
    std::fs::remove_file(d.path().join("model-00003-of-00006.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model-00003-of-00006.safetensors"), "{e}");

    // No weights at all.
    let d = copy_dir(&src);
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    assert!(load_err(d.path()).contains("no model.safetensors"));

    assert!(matches!(Qwen3Config::from_dir(Path::new("/nonexistent")), Err(Error::Io { .. })));
}

// ---------------------------------------------------------------- tokenizer and chat template

fn qwen3_checkpoint_dir() -> tempfile::TempDir {
    // A tiny random Qwen3 whose vocabulary is the real tokenizer's.
    let tok = asset("qwen3-tokenizer");
    let d = tempfile::tempdir().unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok.join(f), d.path().join(f)).unwrap();
    }
    let cfg = serde_json::json!({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151669,
        "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 4, "tie_word_embeddings": false, "dtype": "float32",
        "rope_theta": 1000000.0, "eos_token_id": 151645});
    std::fs::write(d.path().join("config.json"), cfg.to_string()).unwrap();
    let config = Qwen3Config::from_dir(d.path()).unwrap();
    model::checkpoint::save(&Qwen3::<B>::init(&config, &Default::default()), &config, d.path(), usize::MAX).unwrap();
    d
}

#[test]
fn qwen3_tokenizer_encodes_like_python_tokenizers_and_llama_cpp() {
    let fx = read_json(&fixtures().join("tokenizer.json"));
    let mut tok = model::Tokenizer::from_dir(&asset("qwen3-tokenizer")).unwrap();
    assert_eq!(tok.len(), fx["base_vocab_len"].as_u64().unwrap() as usize);
    for case in fx["encodings"].as_array().unwrap() {
        assert_eq!(tok.encode(case["text"].as_str().unwrap()).unwrap(), ids_of(&case["ids"]), "{}", case["text"]);
    }
    // llama.cpp's qwen2 vocabulary test cases.
    let dir = asset("llama-cpp-vocab");
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-qwen2.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(dir.join("ggml-vocab-qwen2.gguf.out")).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let expected: Vec<&str> = out.split('\n').collect();
    let n = texts.len() - 1; // the file ends with a separator
    assert!(n >= 40, "only {n} llama.cpp cases");
    for i in 0..n {
        let want: Vec<u32> = expected[i].split_whitespace().map(|x| x.parse().unwrap()).collect();
        assert_eq!(tok.encode(texts[i]).unwrap(), want, "llama.cpp case {i}: {:?}", texts[i]);
        assert_eq!(tok.decode(&want).unwrap(), texts[i], "decode case {i}");
    }
    // The ten tags, added as transformers' add_tokens does: same ids, same encodings.
    let added = tok.add_deepanalyze_tags();
    assert_eq!(added, ids_of(&fx["tag_ids"]));
    assert_eq!(tok.deepanalyze_tag_ids().unwrap(), added);
    assert!(tok.add_deepanalyze_tags().is_empty(), "adding twice must be a no-op");
    for case in fx["encodings_with_tags"].as_array().unwrap() {
        assert_eq!(tok.encode(case["text"].as_str().unwrap()).unwrap(), ids_of(&case["ids"]), "{}", case["text"]);
    }
}

#[test]
fn trained_tokenizer_pre_tokenizes_like_qwen3() {
    let corpus = ["@mean_len[18.81]\n", "df = pd.read_csv(\"ToothGrowth.csv\")\n", "<Answer>\n@n[1234]\n</Answer>"];
    let tok = model::Tokenizer::train_bpe(corpus.iter().cycle().take(60), 400).unwrap();
    let d = tempfile::tempdir().unwrap();
    tok.save(d.path()).unwrap();
    let ours = read_json(&d.path().join("tokenizer.json"));
    let qwen = read_json(&asset("qwen3-tokenizer").join("tokenizer.json"));
    assert_eq!(ours["pre_tokenizer"], qwen["pre_tokenizer"]);
    assert_eq!(ours["decoder"], qwen["decoder"]);
    // Even a number seen 60 times stays one token per digit.
    let text = "@mean_len[18.81]";
    let ids = tok.encode(text).unwrap();
    let pieces: Vec<String> = ids.iter().map(|&i| tok.decode(&[i]).unwrap()).collect();
    assert_eq!(pieces[pieces.len() - 7..], ["[", "1", "8", ".", "8", "1", "]"], "{pieces:?}");
    assert_eq!(tok.decode(&ids).unwrap(), text);
}

#[test]
fn chat_templates_render_like_transformers() {
    let fx = read_json(&fixtures().join("tokenizer.json"));
    let tok = model::Tokenizer::from_dir(&asset("qwen3-tokenizer")).unwrap();
    let qwen3 = model::ChatTemplate::from_dir(&asset("qwen3-tokenizer"), &tok.config).unwrap();
    assert!(!qwen3.knows_execute());
    let da = model::ChatTemplate::deepanalyze();
    for (i, conv) in fx["chat"].as_array().unwrap().iter().enumerate() {
        let msgs = conv["messages"].as_array().unwrap();
        let tools = conv.get("tools").filter(|t| !t.is_null());
        let gen = conv["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(qwen3.render(msgs, tools, gen).unwrap(), conv["qwen3"].as_str().unwrap(), "qwen3 #{i}");
        assert_eq!(da.render(msgs, tools, gen).unwrap(), conv["deepanalyze"].as_str().unwrap(), "deepanalyze #{i}");
    }
    // A checkpoint without a template gets the DeepAnalyze one.
    let none = model::ChatTemplate::from_dir(Path::new("/nonexistent"), &Default::default()).unwrap();
    assert!(none.origin.contains("DeepAnalyze"));
}

#[test]
fn adding_tags_grows_embeddings_with_the_mean_row_and_saves_loadably() {
    let d = qwen3_checkpoint_dir();
    let mut ck = load(d.path());
    let old_embed = ck.model.embed_tokens.weight.val().into_data().to_vec::<f32>().unwrap();
    let added = ck.add_deepanalyze_tags().unwrap();
    assert_eq!(added.len(), 10);
    assert_eq!(ck.config.vocab_size, 151679);
    let h = 8;
    let embed = ck.model.embed_tokens.weight.val().into_data().to_vec::<f32>().unwrap();
    assert_eq!(embed.len(), 151679 * h);
    assert_eq!(&embed[..old_embed.len()], &old_embed[..], "existing rows untouched");
    for c in 0..h {
        let mean = (0..151669).map(|r| old_embed[r * h + c] as f64).sum::<f64>() / 151669.0;
        for &id in &added {
            assert!((embed[id as usize * h + c] as f64 - mean).abs() < 1e-6);
        }
    }
    let [hin, vout] = ck.model.lm_head.as_ref().unwrap().weight.dims();
    assert_eq!((hin, vout), (h, 151679));
    let out = tempfile::tempdir().unwrap();
    ck.save(out.path(), usize::MAX).unwrap();
    let back = load(out.path());
    assert_eq!(back.config.vocab_size, 151679);
    assert_eq!(back.tokenizer.as_ref().unwrap().deepanalyze_tag_ids().unwrap(), added);
}

// ---------------------------------------------------------------- bf16 compute

/// Mean and largest |Δ| between our per-token log-probs and a reference's (`[batch][seq-1]`).
fn deviation(ours: &[Vec<f32>], want: &Value) -> (f32, f32) {
    let (mut sum, mut n, mut max) = (0f32, 0, 0f32);
    for (b, row) in want.as_array().unwrap().iter().enumerate() {
        for (i, v) in row.as_array().unwrap().iter().enumerate() {
            let d = (ours[b][i] - v.as_f64().unwrap() as f32).abs();
            (sum, n, max) = (sum + d, n + 1, max.max(d));
        }
    }
    (sum / n as f32, max)
}

#[test]
fn bf16_compute_tracks_torch_autocast() {
    // Reference: torch.autocast(bfloat16) over f32 weights (scripts/make_bf16_reference.py).
    // Two correct bf16 implementations differ by about what either differs from f32
    // (torch's own eager and sdpa attention do, on these models), so the bound is that
    // spread: ours stays as close to autocast as autocast is to f32, and is not f32. The
    // copy with bf16 matrices (what generates rollouts) gives the very same numbers.
    for dir in parity_cases() {
        let ck = load(&dir);
        let exp = read_json(&dir.join("expected.json"));
        let autocast = read_json(&dir.join("bf16.json"))["next_token_logprobs"].clone();
        let rows: Vec<Vec<u32>> = exp["input_ids"].as_array().unwrap().iter().map(ids_of).collect();
        let bf16 = model::Compute { precision: model::Precision::Bf16, ..Default::default() };
        let master = ck.model.clone().with_compute(bf16);
        let stored = master.clone().with_matrices_in(burn::tensor::FloatDType::BF16);
        assert_eq!(stored.embed_tokens.weight.val().dtype(), burn::tensor::DType::BF16);
        let (spread, _) = deviation(&logprobs(&ck.model, &rows), &autocast); // our f32 = transformers' f32
        let ours = logprobs(&master, &rows);
        assert_eq!(ours, logprobs(&stored, &rows), "{}: the bf16 copy computes what the master weights do", dir.display());
        let (mean, max) = deviation(&ours, &autocast);
        let (from_f32, _) = deviation(&ours, &exp["next_token_logprobs"]);
        eprintln!("{}: mean |Δ| vs autocast {mean:.4} (max {max:.4}), vs f32 {from_f32:.4}; autocast vs f32 {spread:.4}", dir.display());
        assert!(from_f32 > 1e-3, "{}: bf16 compute gave f32 numbers", dir.display());
        assert!(mean < 1.5 * spread && max < 0.25, "{}: mean |Δ| vs autocast {mean}, max {max}", dir.display());
    }
}

// ---------------------------------------------------------------- training attention

#[test]
fn lean_attention_backward_matches_autodiff_through_burns_attention() {
    // Our causal attention (on Flex in f32 a forward by blocks of 64 queries against tiles
    // of 128 keys, the backward by blocks of 64 queries, both through gemm, each block
    // within one document; elsewhere both by blocks of 512 queries over the keys their
    // documents reach, which Flex runs in other dtypes: `model::attention::forward` and
    // `backward`, checked here too) against burn's autodiff through its
    // own attention (matmul, mask, softmax, matmul kept for the backward) over K and V
    // repeated for GQA: outputs and the gradients of q and of the KV heads, across block
    // boundaries, with q a strided view as the model's are ([batch, len, heads, dim] with
    // its middle dims swapped); 6 query heads over 6 KV heads, then over 3, then packed
    // documents (a row of three, one of them a single token, between two whole rows; then
    // every row packed, so that the second block of queries starts its keys past 0), the
    // reference masking every key outside the query's document. On 3 threads the same bits
    // as on 1.
    type A = burn::backend::Autodiff<B>;
    let device = Default::default();
    <A as Backend>::seed(&device, 7);
    let (b, t) = (3, 700);
    let normal = |shape: [usize; 4]| Tensor::<A, 4>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let q_rows = normal([b, t, 6, 16]).require_grad();
    let w = normal([b, 6, t, 16]);
    let q = || q_rows.clone().swap_dims(1, 2); // a node per use: a backward frees the graph
    let data = |t: Tensor<B, 4>| t.into_data().to_vec::<f32>().unwrap();
    let whole = vec![vec![t]; b];
    let packed = vec![vec![t], vec![250, 1, 449], vec![t]];
    let all_packed = vec![vec![300, 400], vec![100, 600], vec![250, 1, 449]];
    for (kv_heads, docs) in [(6, &whole), (3, &whole), (3, &packed), (3, &all_packed)] {
        let (k, v) = (normal([b, kv_heads, t, 16]).require_grad(), normal([b, kv_heads, t, 16]).require_grad());
        let grads_of = |out: Tensor<A, 4>| {
            let g = (out.clone() * w.clone()).sum().backward();
            let grad = |t: &Tensor<A, 4>| data(t.grad(&g).unwrap());
            [data(out.inner()), grad(&q_rows), grad(&k), grad(&v)]
        };
        let on_threads = |n: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
            pool.install(|| grads_of(model::attention::causal_attention(q(), k.clone(), v.clone(), docs)))
        };
        let ours = on_threads(3);
        assert!(ours == on_threads(1), "attention by head groups changed the numbers");
        let by_blocks = {
            let out = model::attention::forward(q().inner(), k.clone().inner(), v.clone().inner(), docs);
            let [dq, dk, dv] = model::attention::backward(q().inner(), k.clone().inner(), v.clone().inner(), out.clone(), w.clone().inner(), docs);
            [data(out), data(dq.swap_dims(1, 2)), data(dk), data(dv)]
        };
        let repeat = |x: Tensor<A, 4>| x.unsqueeze_dim::<5>(2).expand([b, kv_heads, 6 / kv_heads, t, 16]).reshape([b, 6, t, 16]);
        // True = masked: a key after the query or before its document's start.
        let mut hidden = vec![];
        for lens in docs {
            let starts: Vec<usize> = lens.iter().scan(0, |s, &n| { *s += n; Some(vec![*s - n; n]) }).flatten().collect();
            hidden.extend((0..t).flat_map(|i| (0..t).map(move |j| (i, j))).map(|(i, j)| j > i || j < starts[i]));
        }
        let mask = Tensor::<A, 4, Bool>::from_data(TensorData::new(hidden, [b, 1, t, t]), &device).expand([b, 6, t, t]);
        let options = burn::tensor::ops::AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
        let reference = grads_of(burn::tensor::module::attention(q(), repeat(k.clone()), repeat(v.clone()), Some(mask), None, options));
        for (how, ours) in [("ours", &ours), ("by blocks", &by_blocks)] {
            for (name, (a, b)) in ["output", "dq", "dk", "dv"].iter().zip(ours.iter().zip(&reference)) {
                assert_eq!(a.len(), b.len(), "{how} {name}, {kv_heads} KV heads, documents {docs:?}");
                let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-5 * scale.max(1.0), "{how} {name}, {kv_heads} KV heads, documents {docs:?}: max |Δ| {worst} (max |ref| {scale})");
            }
        }
    }
}

#[test]
fn matmul_op_gradients_equal_burns_autodiff() {
    // The products' own op (`model::matmul`, which a backend may run on a kernel of its
    // choosing) against burn's autodiff matmul and linear: the same values and gradients,
    // batched with a transposed view for an operand, and as a linear layer over [batch,
    // len, in]; an input that takes no gradient gets none (a first layer's).
    type A = burn::backend::Autodiff<B>;
    type Product<'a> = &'a dyn Fn(Tensor<A, 3>, Tensor<A, 3>) -> Tensor<A, 3>;
    let device = Default::default();
    <A as Backend>::seed(&device, 5);
    let rand = |shape: [usize; 3]| Tensor::<A, 3>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let (x, w_t, g) = (rand([3, 37, 20]).require_grad(), rand([3, 29, 20]).require_grad(), rand([3, 37, 29]));
    let w = w_t.clone().slice([0..1, 0..29, 0..20]).squeeze_dim::<2>(0).transpose().detach().require_grad();
    let data = |t: Tensor<B, 3>| t.into_data().to_vec::<f32>().unwrap();
    let data2 = |t: Tensor<B, 2>| t.into_data().to_vec::<f32>().unwrap();
    for x_takes_grad in [true, false] {
        let x = if x_takes_grad { x.clone() } else { Tensor::from_inner(x.clone().inner()) };
        let batched: [Product; 2] = [&|a, b| model::matmul::matmul(a, b), &|a, b| a.matmul(b)];
        let [ours, burns] = batched.map(|product| {
            let out = product(x.clone(), w_t.clone().swap_dims(1, 2));
            let grads = (out.clone() * g.clone()).sum().backward();
            (data(out.inner()), x.grad(&grads).map(data), w_t.grad(&grads).map(data))
        });
        assert!(ours.1.is_some() == x_takes_grad, "a gradient for x exactly when it takes one");
        assert_eq!(ours, burns, "batched product, x takes a gradient: {x_takes_grad}");
        let linear: [&dyn Fn(Tensor<A, 3>, Tensor<A, 2>) -> Tensor<A, 3>; 2] = [&|a, w| model::matmul::linear(a, w), &|a, w| burn::tensor::module::linear(a, w, None)];
        let [ours, burns] = linear.map(|product| {
            let out = product(x.clone(), w.clone());
            let grads = (out.clone() * g.clone()).sum().backward();
            (data(out.inner()), x.grad(&grads).map(data), w.grad(&grads).map(data2))
        });
        // The weight's gradient: one product over all rows here, a sum of per-row-block
        // products there; equal to rounding.
        let close = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()));
        let parts = [(Some(&ours.0), Some(&burns.0)), (ours.1.as_ref(), burns.1.as_ref()), (ours.2.as_ref(), burns.2.as_ref())];
        for (name, (a, b)) in ["output", "d x", "d weight"].iter().zip(parts) {
            assert_eq!(a.is_some(), b.is_some(), "linear layer: {name} present in both");
            assert!(a.zip(b).is_none_or(|(a, b)| close(a, b)), "linear layer, x takes a gradient: {x_takes_grad}: {name} differs");
        }
    }
}

#[test]
fn embedding_op_gradients_equal_burns_autodiff_tied_or_not() {
    // The embedding's own op (`model::embedding`: its backward adds the tokens' rows into
    // the gradient the weight already has, on Flex in place) against burn's autodiff
    // embedding: alone, and tied to an LM head-like product (the weight's other gradient
    // registered first); tokens that recur add each of their rows. And the op itself: a
    // gradient that another tensor shares is added into a copy and left as it was; by
    // burn's ops (the default other backends run) the same.
    type A = burn::backend::Autodiff<B>;
    let device = Default::default();
    <A as Backend>::seed(&device, 8);
    let (vocab, hidden) = (50, 8);
    let tokens = Tensor::<A, 2, Int>::from_data(TensorData::new(vec![3i64, 7, 3, 49, 0, 7, 7, 12, 3, 5, 0, 1], [2, 6]), &device);
    let rand = |shape: [usize; 3]| Tensor::<A, 3>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let (g, g_head) = (rand([2, 6, hidden]), rand([2, 6, vocab]));
    let w = Tensor::<A, 2>::random([vocab, hidden], burn::tensor::Distribution::Normal(0.0, 1.0), &device).require_grad();
    let data = |t: Tensor<B, 2>| t.into_data().to_vec::<f32>().unwrap();
    type Lookup<'a> = &'a dyn Fn(Tensor<A, 2>, Tensor<A, 2, Int>) -> Tensor<A, 3>;
    let lookups: [Lookup; 2] = [&|w, t| model::embedding::embedding(w, t), &|w, t| burn::tensor::module::embedding(w, t)];
    for tied in [false, true] {
        let [ours, burns] = lookups.map(|lookup| {
            let x = lookup(w.clone(), tokens.clone());
            let mut loss = (x.clone() * g.clone()).sum();
            if tied {
                loss = loss + (x.matmul(w.clone().transpose().unsqueeze::<3>()) * g_head.clone()).sum();
            }
            data(w.grad(&loss.backward()).expect("the weight takes a gradient"))
        });
        let close = ours.iter().zip(&burns).all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()));
        assert!(close, "tied: {tied}: the embedding's gradient differs from burn's");
    }
    let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![3i64, 7, 3, 49, 0], [5]), &device);
    let rows = Tensor::<B, 2>::random([5, hidden], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let so_far = Tensor::<B, 2>::random([vocab, hidden], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let mut want = data(so_far.clone());
    for (i, &t) in [3usize, 7, 3, 49, 0].iter().enumerate() {
        for c in 0..hidden {
            want[t * hidden + c] += data(rows.clone())[i * hidden + c];
        }
    }
    let op = |grad: Option<Tensor<B, 2>>| {
        let g = <B as model::ModelBackend>::embedding_grad(grad.map(|t| t.into_primitive().tensor()), vocab, ids.clone().into_primitive(), rows.clone().into_primitive().tensor());
        data(Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(g)))
    };
    let before = data(so_far.clone());
    let kept = so_far.clone();
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6 * (1.0 + y.abs()));
    assert!(close(&op(Some(so_far)), &want), "shared gradient: rows added into a copy");
    assert_eq!(data(kept), before, "a shared gradient was written");
    assert!(close(&op(Some(Tensor::from_data(TensorData::new(before.clone(), [vocab, hidden]), &device))), &want), "rows added in place");
    let by_ops = model::embedding::grad_by_ops(Some(Tensor::<B, 2>::from_data(TensorData::new(before, [vocab, hidden]), &device)), vocab, ids.clone(), rows.clone());
    assert!(close(&data(by_ops), &want), "by burn's ops");
    let from_zeros: Vec<f32> = op(None).iter().zip(data(model::embedding::grad_by_ops(None, vocab, ids.clone(), rows.clone()))).map(|(a, b)| a - b).collect();
    assert!(from_zeros.iter().all(|d| d.abs() <= 1e-6), "no gradient so far: the rows into zeros");
}

#[test]
fn sum_of_squares_op_matches_a_direct_sum() {
    // The clip's per-gradient Σ x² (`ModelBackend::sum_of_squares`; on Flex blocks of f32
    // lanes summed in f64) against the sum in f64: more elements than a block, a transposed
    // view, and a bf16 tensor (burn's ops, within bf16's rounding of the squares' sum).
    use model::ModelBackend;
    let device = Default::default();
    B::seed(&device, 12);
    let x = Tensor::<B, 2>::random([300, 700], burn::tensor::Distribution::Normal(0.0, 2.0), &device);
    let direct = |t: &Tensor<B, 2>| t.clone().into_data().convert::<f64>().to_vec::<f64>().unwrap().iter().map(|v| v * v).sum::<f64>();
    let ours = |t: Tensor<B, 2>| Tensor::<B, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(B::sum_of_squares(t.into_primitive().tensor()))).into_scalar().elem::<f64>();
    for (name, t, tolerance) in [("contiguous", x.clone(), 1e-6), ("transposed", x.clone().transpose(), 1e-6), ("bf16", x.cast(burn::tensor::FloatDType::BF16), 1e-2)] {
        let (got, want) = (ours(t.clone()), direct(&t));
        assert!((got - want).abs() <= tolerance * want, "{name}: {got} against {want}");
    }
}

#[test]
fn blockwise_attention_matches_burns_autodiff_in_f32_and_bf16() {
    // What the GPU runs (`attention::forward` and `backward`: blocks of 512 queries,
    // products in the inputs' dtype, softmax and sums in f32) against burn's attention and
    // its autodiff in f32: to f32 precision from f32 inputs; from bf16 inputs, at most three
    // times as far as rounding the inputs and the results to bf16 puts the f32 computation
    // (the probabilities rounded to bf16 for their products, as FlashAttention's, are the
    // rest: measured 0.9-2.3x).
    // q a view with heads and positions swapped, as the model's; 6 query heads over 3 KV
    // heads (packed two rows a position).
    use burn::tensor::FloatDType::{BF16, F32};
    type A = burn::backend::Autodiff<B>;
    let device = Default::default();
    <A as Backend>::seed(&device, 11);
    let rand = |shape| Tensor::<A, 4>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let q_rows = rand([2, 700, 6, 16]).require_grad();
    let (k, v, w) = (rand([2, 3, 700, 16]).require_grad(), rand([2, 3, 700, 16]).require_grad(), rand([2, 6, 700, 16]));
    let q = q_rows.clone().swap_dims(1, 2);
    let causal = burn::tensor::ops::AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    let repeat = |x: Tensor<A, 4>| x.unsqueeze_dim::<5>(2).expand([2, 3, 2, 700, 16]).reshape([2, 6, 700, 16]);
    let out = burn::tensor::module::attention(q.clone(), repeat(k.clone()), repeat(v.clone()), None, None, causal);
    let g = (out.clone() * w.clone()).sum().backward();
    let reference = [out.clone().inner(), q_rows.grad(&g).unwrap().swap_dims(1, 2), k.grad(&g).unwrap(), v.grad(&g).unwrap()];
    let inputs = [q.inner(), k.inner(), v.inner(), out.inner(), w.inner()];
    // Max |ours − reference| of the output, dq, dk, dv, each over the reference's max |·|;
    // the results rounded to bf16 first when `round`.
    let errors = |inputs: [Tensor<B, 4>; 5], round: bool| -> Vec<f32> {
        let dtype = inputs[0].dtype();
        let [q, k, v, out, d_out] = inputs;
        let whole = vec![vec![700]; 2];
        let forward = model::attention::forward(q.clone(), k.clone(), v.clone(), &whole);
        let ours = std::iter::once(forward).chain(model::attention::backward(q, k, v, out, d_out, &whole));
        ours.zip(&reference).map(|(a, r)| {
            assert_eq!(a.dtype(), dtype, "results come back in the inputs' dtype");
            let a = if round { a.cast(BF16) } else { a };
            let (a, r) = (a.cast(F32).into_data().to_vec::<f32>().unwrap(), r.clone().into_data().to_vec::<f32>().unwrap());
            let worst = a.iter().zip(&r).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            worst / r.iter().map(|y| y.abs()).fold(0f32, f32::max)
        }).collect()
    };
    let f32s = errors(inputs.clone(), false);
    let bf16s = errors(inputs.clone().map(|t| t.cast(BF16)), false);
    let rounded = errors(inputs.map(|t| t.cast(BF16).cast(F32)), true);
    for (i, name) in ["output", "dq", "dk", "dv"].iter().enumerate() {
        assert!(f32s[i] <= 2e-6, "{name} from f32: {}", f32s[i]);
        assert!(bf16s[i] <= 3.0 * rounded[i], "{name} from bf16: {} (rounding inputs and results alone: {})", bf16s[i], rounded[i]);
    }
}

#[test]
fn rope_op_matches_the_tensor_ops_and_their_autodiff() {
    // The backend's RoPE (Flex: a pass per position in f32) and its backward (the same op
    // with −sin) against rotate_half in tensor ops under burn's autodiff: output and
    // gradient, YaRN-scaled cos/sin, positions that differ by row (left padding).
    type A = burn::backend::Autodiff<B>;
    let device = Default::default();
    <A as Backend>::seed(&device, 5);
    let cfg = Qwen3Config::from_file(&fixtures().join("parity/gqa4_yarn_f16/config.json")).unwrap();
    let rope = model::rope::Rope::new(&cfg);
    let (b, t, h, d) = (2, 5, 3, cfg.head_dim);
    let positions: Vec<Vec<usize>> = vec![(0..t).collect(), (0..t).map(|p| p.saturating_sub(2)).collect()];
    let (cos, sin) = rope.cos_sin::<A>(&positions, &device);
    let x = Tensor::<A, 4>::random([b, t, h, d], burn::tensor::Distribution::Normal(0.0, 1.0), &device).require_grad();
    let w = Tensor::<A, 4>::random([b, t, h, d], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let run = |out: Tensor<A, 4>| {
        let g = (out.clone() * w.clone()).sum().backward();
        [out.into_data().to_vec::<f32>().unwrap(), x.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap()]
    };
    let ours = run(model::rope::rotary(x.clone(), cos.clone(), sin.clone()));
    let reference = run(model::rope::apply_rotary(x.clone(), cos, sin));
    for (name, (a, b)) in ["output", "dx"].iter().zip(ours.iter().zip(&reference)) {
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-6, "{name}: max |Δ| {worst}");
    }
}

#[test]
fn decoding_attention_reads_the_cache_in_place_like_burns_attention() {
    // On Flex a decoding step writes its keys into the cache's buffer in place and reads
    // only the filled positions, where they lie (GPU backends read the whole capacity,
    // masked). Against burn's attention over the filled keys, the padding masked: rows
    // with no padding, some, and all but the newest key; a head dim with a tail past the
    // kernel's eight lanes. A bf16 cache the same way (computed in f32, as Flex's own).
    use burn::tensor::{ops::FloatTensor, Distribution, FloatDType, TensorPrimitive};
    use burn_flex::Flex;
    use model::ModelBackend;
    let device = Default::default();
    let (b, g, r, d, capacity, filled) = (3, 2, 3, 20, 40, 30);
    let rand = |shape: [usize; 4]| Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let prim = |x: Tensor<Flex, 4>| x.into_primitive().tensor();
    let tensor = |x: FloatTensor<Flex>| Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(x));
    // The spare capacity holds garbage: masked, it must not count.
    let fill = |first: Tensor<Flex, 4>, newest: Tensor<Flex, 4>| {
        let cache = Flex::kv_write(prim(rand([b, g, capacity, d])), prim(first), 0);
        let before = cache.bytes().as_ptr();
        let shared = cache.clone();
        let copied = Flex::kv_write(cache.clone(), prim(newest.clone()), filled - 1);
        drop(cache);
        assert_ne!(copied.bytes().as_ptr(), before, "a shared cache must be copied, not written");
        assert!(tensor(shared.clone()).slice([0..b, 0..g, filled - 1..filled, 0..d]).into_data() != newest.clone().into_data());
        let in_place = Flex::kv_write(shared, prim(newest), filled - 1);
        assert_eq!(in_place.bytes().as_ptr(), before, "the cache's only reference is written in place");
        assert_eq!(tensor(in_place.clone()).into_data(), tensor(copied).into_data());
        tensor(in_place)
    };
    let (k, v) = (fill(rand([b, g, filled - 1, d]), rand([b, g, 1, d])), fill(rand([b, g, filled - 1, d]), rand([b, g, 1, d])));
    let q = rand([b, g, r, d]);
    let padding = [0, 5, filled - 1];
    let masked: Vec<bool> = (0..b).flat_map(|row| (0..capacity).map(move |j| j < padding[row] || j >= filled)).collect();
    let mask = Tensor::<Flex, 4, Bool>::from_data(TensorData::new(masked, [b, 1, 1, capacity]), &device);
    let keys = |x: Tensor<Flex, 4>| x.slice([0..b, 0..g, 0..filled, 0..d]);
    let options = burn::tensor::ops::AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
    let compare = |dtype: FloatDType, tolerance: f32| {
        let (q, k, v) = (q.clone().cast(dtype), k.clone().cast(dtype), v.clone().cast(dtype));
        let ours = tensor(Flex::decode_attention(prim(q.clone()), prim(k.clone()), prim(v.clone()), Some(mask.clone().into_primitive()), filled));
        let filled_mask = mask.clone().slice([0..b, 0..1, 0..1, 0..filled]).expand([b, g, r, filled]);
        let reference = burn::tensor::module::attention(q, keys(k), keys(v), Some(filled_mask), None, options);
        assert_eq!(ours.dtype(), reference.dtype());
        let f32s = |x: Tensor<Flex, 4>| x.cast(FloatDType::F32).into_data().to_vec::<f32>().unwrap();
        let (ours, reference) = (f32s(ours), f32s(reference));
        let worst = ours.iter().zip(&reference).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < tolerance, "{dtype:?}: max |Δ| {worst}");
        ours
    };
    // bf16: at most one rounding step of bf16 apart (8 bits of mantissa; |outputs| < 4).
    compare(FloatDType::BF16, 4.0 / 128.0);
    let ours = compare(FloatDType::F32, 1e-5);
    // The row that sees only its newest key gets that key's value.
    let newest = v.slice([b - 1..b, 0..g, filled - 1..filled, 0..d]).expand([1, g, r, d]).into_data().to_vec::<f32>().unwrap();
    assert!(ours[(b - 1) * g * r * d..].iter().zip(&newest).all(|(x, y)| (x - y).abs() < 1e-6));
}

#[test]
fn flex_softmax_matches_burns_to_float_precision() {
    // Flex's softmax for the attention backward has its own exp (vectorizable): against
    // burn's softmax (libm's exp) on rows of wide range, with masked (-inf) entries and
    // a row length that is not a multiple of its eight lanes; masked entries exactly 0.
    use burn::tensor::{Distribution, TensorPrimitive};
    use burn_flex::Flex;
    use model::ModelBackend;
    let device = Default::default();
    let x = Tensor::<Flex, 4>::random([2, 3, 5, 67], Distribution::Normal(0.0, 12.0), &device);
    let masked = Tensor::<Flex, 4>::random([2, 3, 5, 67], Distribution::Uniform(0.0, 1.0), &device).lower_elem(0.3);
    let x = x.mask_fill(masked.clone(), f32::NEG_INFINITY);
    let ours = Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(Flex::softmax_last(x.clone().into_primitive().tensor())));
    let reference = burn::tensor::activation::softmax(x, 3);
    let (ours, reference) = (ours.into_data().to_vec::<f32>().unwrap(), reference.into_data().to_vec::<f32>().unwrap());
    let masked = masked.into_data().to_vec::<bool>().unwrap();
    for ((a, b), m) in ours.iter().zip(&reference).zip(&masked) {
        assert!((a - b).abs() <= 2e-6 * b.abs() + 1e-30, "{a} vs {b}");
        if *m {
            assert_eq!(*a, 0.0);
        }
    }
}

#[test]
fn chunked_lm_head_matches_autodiff_through_the_full_logits() {
    // Token log-probs by chunks of 3 rows (backward recomputed per chunk) against burn's
    // autodiff through the whole [n, vocab] logits and log_softmax: log-probs, entropies,
    // and the gradients of hidden and weight for a loss with signed per-token weights (as
    // GRPO's), in f32 and in bf16 compute.
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Distribution, FloatDType};
    use model::lm_head::{token_logprobs, Head};
    type A = burn::backend::Autodiff<B>;
    let device = Default::default();
    <A as Backend>::seed(&device, 11);
    let (n, h, vocab, temperature) = (8, 16, 50, 0.7);
    let hidden = Tensor::<A, 2>::random([n, h], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let weight = Tensor::<A, 2>::random([h, vocab], Distribution::Normal(0.0, 0.5), &device).require_grad();
    let targets = Tensor::<A, 1, Int>::random([n], Distribution::Uniform(0.0, vocab as f64), &device);
    let coef = Tensor::<A, 1>::random([n], Distribution::Normal(0.0, 1.0), &device);
    let vec = |t: Tensor<A, 1>| t.into_data().to_vec::<f32>().unwrap();
    let run = |logp: Tensor<A, 1>, entropy: Tensor<A, 1>| {
        let g = (logp.clone() * coef.clone()).sum().backward();
        let grad = |t: &Tensor<A, 2>| t.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap();
        [vec(logp), vec(entropy), grad(&hidden), grad(&weight)]
    };
    // Both layouts: a Linear's [hidden, vocab] and a tied embedding's [vocab, hidden].
    for (dtype, tol, vocab_major) in [(FloatDType::F32, 1e-5, false), (FloatDType::F32, 1e-5, true), (FloatDType::BF16, 1e-2, false)] {
        let head = Head { temperature, dtype, rows: 3, vocab_major };
        let w = if vocab_major { weight.clone().transpose() } else { weight.clone() };
        let (logp, entropy) = token_logprobs(hidden.clone(), w, targets.clone(), head);
        let ours = run(logp, entropy);
        let z = hidden.clone().cast(dtype).matmul(weight.clone().cast(dtype)).cast(FloatDType::F32).div_scalar(temperature);
        let l = log_softmax(z, 1);
        let entropy = (l.clone().exp() * l.clone()).sum_dim(1).squeeze_dim::<1>(1).neg().detach();
        let reference = run(l.gather(1, targets.clone().unsqueeze_dim(1)).squeeze_dim(1), entropy);
        for (name, (a, b)) in ["logp", "entropy", "d hidden", "d weight"].iter().zip(ours.iter().zip(&reference)) {
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
            assert!(worst <= tol * scale.max(1.0), "{dtype:?} (vocab-major {vocab_major}) {name}: max |Δ| {worst} (max |ref| {scale})");
        }
    }
    // The backend's own per-row passes (Flex: vectorized exp, in place) against the tensor-op
    // defaults that other backends run: at a vocabulary that is not a multiple of 8 lanes,
    // and at Qwen3's, whose rows the tensor ops reduce in 128 parts (`row_reduce`).
    use model::ModelBackend;
    for vocab in [1003, 151_936] {
        let z = Tensor::<B, 2>::random([5, vocab], Distribution::Normal(0.0, 3.0), &device);
        let targets = Tensor::<B, 1, Int>::from_data([0, vocab as i64 - 1, 7, 500, 999], &device);
        let g = Tensor::<B, 1>::from_data([0.5, -1.0, 2.0, 0.0, 1.5], &device);
        let p = |x: Tensor<B, 2>| x.into_primitive().tensor();
        let v = |x| Tensor::<B, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(x)).into_data().to_vec::<f32>().unwrap();
        let (lp, ent, lse) = B::logit_stats(p(z.clone()), targets.clone().into_primitive());
        let (want_lp, want_ent, want_lse) = model::lm_head::logit_stats_by_ops(z.clone(), targets.clone());
        let (want_lp, want_ent, want_lse) = (want_lp.into_data().to_vec::<f32>().unwrap(), want_ent.into_data().to_vec::<f32>().unwrap(), want_lse.into_data().to_vec::<f32>().unwrap());
        for (name, (a, b)) in ["logp", "entropy", "logsumexp"].iter().zip([(v(lp), want_lp), (v(ent), want_ent), (v(lse.clone()), want_lse.clone())]) {
            assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5 * y.abs().max(1.0)), "vocab {vocab} {name}: {a:?} vs {b:?}");
        }
        let lse_t = Tensor::<B, 1>::from_data(want_lse.as_slice(), &device);
        let dz = Tensor::<B, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(B::logit_grad(p(z.clone()), Some(lse_t.clone().into_primitive().tensor()), targets.clone().into_primitive(), g.clone().into_primitive().tensor())));
        // With the forward's logsumexp, and recomputing it (the backward's earlier chunks).
        for lse in [Some(lse_t), None] {
            let want = model::lm_head::logit_grad_by_ops(z.clone(), lse, targets.clone(), g.clone());
            let worst = (dz.clone() - want).abs().max().into_scalar();
            assert!(worst <= 1e-6, "vocab {vocab} logit grad: max |Δ| {worst}");
        }
    }
    // The split reduction is the plain one: the max exactly, the sum within f32 rounding.
    let x = Tensor::<B, 2>::random([3, 151_936], Distribution::Normal(0.0, 1.0), &device);
    let split_max = model::lm_head::row_reduce(x.clone(), Tensor::max_dim);
    assert_eq!(split_max.into_data().to_vec::<f32>().unwrap(), x.clone().max_dim(1).into_data().to_vec::<f32>().unwrap());
    let (a, b) = (model::lm_head::row_reduce(x.clone(), Tensor::sum_dim), x.sum_dim(1));
    let worst = (a - b).abs().max().into_scalar();
    assert!(worst <= 1e-2, "split sum: max |Δ| {worst}");
}

/// A block of attention scores as the softmax ops take them: packed rows `start..start +
/// rows` (row i the query at position i / group: GQA packing, a KV head's query heads as
/// rows), keys from `key0` up to the block's last position, each batch row's documents
/// (`docs`, filling `len` positions each).
struct ScoreBlock {
    h: usize,
    rows: usize,
    start: usize,
    group: usize,
    key0: usize,
    len: usize,
    docs: Vec<Vec<usize>>,
}

impl ScoreBlock {
    fn keys(&self) -> usize {
        (self.start + self.rows).div_ceil(self.group) - self.key0
    }

    /// Each batch row's position's document start.
    fn first(&self) -> Vec<Vec<usize>> {
        self.docs.iter().map(|lens| (0..self.len).map(|i| {
            let mut at = 0;
            lens.iter().map(|&n| { at += n; at - n }).take_while(|&s| s <= i).last().unwrap()
        }).collect()).collect()
    }

    fn rows_of<Bk: Backend>(&self, device: &Bk::Device) -> model::attention::BlockRows<Bk> {
        let flat = self.first().concat().iter().map(|&k| k as i64).collect();
        let first = Tensor::<Bk, 2, Int>::from_data(TensorData::new(flat, [self.docs.len(), self.len]), device).into_primitive();
        model::attention::BlockRows { start: self.start, group: self.group, key0: self.key0, first }
    }

    /// The softmax written out in f64 from `s` (`[batch·heads, rows, keys]` flat): p and
    /// the scores' gradient p ∘ (dp − Δ)·scale per row over the keys from its document's
    /// start to its position, Δ = rowsum(dO ∘ O) of the row's query from `out`, `d_out`
    /// (`[batch·heads, len · group, dim]` flat).
    fn direct(&self, s: &[f32], dp: &[f32], out: &[f32], d_out: &[f32], scale: f64) -> (Vec<f64>, Vec<f64>) {
        let (keys, first) = (self.keys(), self.first());
        let dim = out.len() / (s.len() / (self.rows * keys)) / (self.len * self.group);
        let (mut p, mut ds) = (vec![0.0; s.len()], vec![0.0; s.len()]);
        for (at, row) in s.chunks(keys).enumerate() {
            let (bh, i) = (at / self.rows, self.start + at % self.rows);
            let position = i / self.group;
            let query = (bh * self.len * self.group + i) * dim;
            let delta: f64 = (query..query + dim).map(|c| out[c] as f64 * d_out[c] as f64).sum();
            let seen = first[bh / self.h][position] - self.key0..position + 1 - self.key0;
            let max = row[seen.clone()].iter().map(|&x| x as f64 * scale).fold(f64::MIN, f64::max);
            let sum: f64 = row[seen.clone()].iter().map(|&x| (x as f64 * scale - max).exp()).sum();
            for j in seen {
                let j = at * keys + j;
                p[j] = (s[j] as f64 * scale - max).exp() / sum;
                ds[j] = p[j] * (dp[j] as f64 - delta) * scale;
            }
        }
        (p, ds)
    }
}

/// Blocks for the softmax tests: rows shorter and longer than a cube's 128 threads, blocks
/// that start at 0 and past it, a query a row and two to four (GQA packing), head dims
/// under and over 128, and packed documents, the block's keys from 0 or from past the
/// start (64 and 128: only what its rows see).
fn score_blocks() -> Vec<(ScoreBlock, usize)> {
    let block = |h, rows, start, group, key0, len, docs: Vec<Vec<usize>>| ScoreBlock { h, rows, start, group, key0, len, docs };
    vec![
        (block(3, 37, 45, 1, 0, 90, vec![vec![90]; 2]), 8),
        (block(2, 5, 300, 1, 0, 305, vec![vec![305]]), 200),
        (block(1, 130, 0, 1, 0, 130, vec![vec![130]]), 64),
        (block(3, 74, 90, 2, 0, 90, vec![vec![90], vec![20, 25, 45]]), 8),
        (block(2, 520, 0, 4, 0, 130, vec![vec![130]]), 32),
        (block(3, 111, 135, 3, 0, 90, vec![vec![40, 1, 49], vec![90]]), 16),
        (block(2, 100, 300, 1, 128, 400, vec![vec![130, 270], vec![200, 200]]), 8),
        (block(1, 300, 600, 3, 64, 300, vec![vec![64, 136, 100], vec![150, 150]]), 130),
    ]
}

/// The attention output and its gradient as the softmax ops get them: `[batch, heads, len,
/// dim]` views of `[batch, len, heads, dim]` tensors (the model's layout), so that a kernel
/// that ignores strides reads the wrong rows.
fn attention_outputs<Bk: Backend>(b: usize, h: usize, len: usize, dim: usize, device: &Bk::Device) -> [Tensor<Bk, 4>; 2] {
    let normal = || Tensor::<Bk, 4>::random([b, len, h, dim], burn::tensor::Distribution::Normal(0.0, 1.0), device).swap_dims(1, 2);
    [normal(), normal()]
}

#[test]
fn attention_softmax_by_ops_matches_a_direct_softmax() {
    // The default of the attention softmax op (burn's ops: cast, scale, mask, softmax),
    // which CPU backends run and a GPU kernel replaces, against the softmax written out
    // (`score_blocks`: GQA packing, packed documents, keys from past 0).
    let device = Default::default();
    B::seed(&device, 3);
    for (block, dim) in score_blocks() {
        let (b, h, keys, scale) = (block.docs.len(), block.h, block.keys(), 0.37);
        let normal = |shape: [usize; 4]| Tensor::<B, 4>::random(shape, burn::tensor::Distribution::Normal(0.0, 3.0), &device);
        let (s, dp) = (normal([b, h, block.rows, keys]), normal([b, h, block.rows, keys]));
        let [out, d_out] = attention_outputs::<B>(b, h, block.len * block.group, dim, &device);
        let data = |t: Tensor<B, 4>| t.into_data().to_vec::<f32>().unwrap();
        let (p_want, ds_want) = block.direct(&data(s.clone()), &data(dp.clone()), &data(out.clone()), &data(d_out.clone()), scale);
        let rows = block.rows_of::<B>(&device);
        let p = model::attention::causal_softmax_by_ops(s.clone(), &rows, scale);
        let [p2, ds] = model::attention::causal_softmax_grad_by_ops(s, dp, out, d_out, &rows, scale);
        let worst = |got: Vec<f32>, want: &[f64]| got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
        for (name, got, want) in [("p", data(p), &p_want), ("p (grad)", data(p2), &p_want), ("ds", data(ds), &ds_want)] {
            let err = worst(got, want);
            assert!(err <= 1e-5, "{name}, block {} x {keys} from {}: max |Δ| {err}", block.rows, block.start);
        }
    }
}

#[cfg(feature = "wgpu-kernels")]
#[test]
fn attention_softmax_kernels_match_a_direct_softmax() {
    // The CUDA build's attention softmax kernels (`backend/kernels/softmax.rs`), run here on
    // wgpu (Mesa's lavapipe, a Vulkan driver on the CPU): rows shorter and longer than a
    // cube's 128 threads, blocks that start at 0 and past it, a query a row and two or four
    // (GQA packing), head dims under and over 128 (the gradient's Δ sums the output's row
    // itself, from strided views); every future key
    // exactly 0. In f32 to f32 precision; from f16 inputs (the kernels read and write the
    // scores' dtype, bf16 on CUDA, and compute in f32) within f16's rounding of the results.
    use burn::tensor::FloatDType::{F16, F32};
    softmax_kernels_in(F32, 1e-5);
    softmax_kernels_in(F16, 1e-3);
}

#[cfg(feature = "wgpu-kernels")]
fn softmax_kernels_in(dtype: burn::tensor::FloatDType, tolerance: f64) {
    use burn::tensor::TensorPrimitive;
    use model::backend::kernels;
    let device = cubecl::wgpu::WgpuDevice::default();
    W::seed(&device, 9);
    for (block, dim) in score_blocks() {
        let (b, h, keys, scale) = (block.docs.len(), block.h, block.keys(), 0.37);
        let normal = |shape: [usize; 4]| Tensor::<W, 4>::random(shape, burn::tensor::Distribution::Normal(0.0, 3.0), &device).cast(dtype);
        let (s, dp) = (normal([b, h, block.rows, keys]), normal([b, h, block.rows, keys]));
        let [out, d_out] = attention_outputs::<W>(b, h, block.len * block.group, dim, &device).map(|t| t.cast(dtype));
        let data = |t: Tensor<W, 4>| t.cast(burn::tensor::FloatDType::F32).into_data().to_vec::<f32>().unwrap();
        let (p_want, ds_want) = block.direct(&data(s.clone()), &data(dp.clone()), &data(out.clone()), &data(d_out.clone()), scale);
        let prim = |t: Tensor<W, 4>| t.into_primitive().tensor();
        let tensor = |x| data(Tensor::<W, 4>::from_primitive(TensorPrimitive::Float(x)));
        let rows = block.rows_of::<W>(&device);
        let p = tensor(kernels::causal_softmax(prim(s.clone()), &rows, scale as f32));
        let [p2, ds] = kernels::causal_softmax_grad(prim(s), prim(dp), prim(out), prim(d_out), &rows, scale as f32).map(tensor);
        for (name, got, want) in [("p", &p, &p_want), ("p (grad)", &p2, &p_want), ("ds", &ds, &ds_want)] {
            let scale = want.iter().fold(1f64, |m, w| m.max(w.abs()));
            let err = got.iter().zip(want.iter()).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
            assert!(err <= tolerance * scale, "{name}, block {} x {keys} from {}, {} rows a position: max |Δ| {err} (max |want| {scale})", block.rows, block.start, block.group);
            let unseen = got.iter().zip(want.iter()).filter(|(_, &w)| w == 0.0).all(|(&g, _)| g == 0.0);
            assert!(unseen, "{name}: a key the row does not see is not 0");
        }
    }
}

#[test]
fn norm_and_swiglu_ops_match_burns_autodiff() {
    // RMSNorm and silu(gate) ∘ up as ops with their backward written out (which a backend
    // may run as one kernel each way: Flex does in f32) against burn's autodiff through the
    // plain expressions: outputs and every input's gradient, through the model's ops and
    // by the default tensor ops; the norm also from a bf16 input (q and k are normed from
    // the bf16 projections; its gradient comes back in bf16).
    use burn::tensor::activation::silu;
    use burn::tensor::FloatDType::{BF16, F32};
    type A = burn::backend::Autodiff<B>;
    let device = Default::default();
    <A as Backend>::seed(&device, 13);
    let normal = |shape: [usize; 4]| Tensor::<A, 4>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let data = |t: Tensor<B, 4>| t.into_data().to_vec::<f32>().unwrap();
    let close = |name: &str, a: &[f32], b: &[f32], tol: f32| {
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0f32, f32::max);
        assert!(a.len() == b.len() && worst <= tol, "{name}: max relative |Δ| {worst}");
    };
    let (x, w) = (normal([2, 5, 3, 16]).require_grad(), normal([2, 5, 3, 16]));
    let gain = (Tensor::<A, 1>::random([16], burn::tensor::Distribution::Normal(1.0, 0.3), &device)).require_grad();
    for (dtype, tol) in [(F32, 1e-5), (BF16, 1e-5)] {
        let eps = 1e-6;
        let norms: [&dyn Fn(Tensor<A, 4>) -> Tensor<A, 4>; 2] = [&|x| model::norm::rms_norm(x, gain.clone(), eps), &|x| {
            let x = x.cast(F32);
            let rms = (x.clone().square().mean_dim(3) + eps).sqrt();
            (x / rms) * gain.clone().unsqueeze::<4>()
        }];
        let [ours, burns] = norms.map(|f| {
            let out = f(x.clone().cast(dtype));
            let g = (out.clone() * w.clone()).sum().backward();
            (data(out.inner()), data(x.grad(&g).unwrap()), gain.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap())
        });
        close(&format!("norm {dtype:?}: output"), &ours.0, &burns.0, tol);
        close(&format!("norm {dtype:?}: d x"), &ours.1, &burns.1, if dtype == BF16 { 8e-3 } else { tol });
        close(&format!("norm {dtype:?}: d gain"), &ours.2, &burns.2, 1e-4);
        // The ops by burn's tensor ops (the default; Flex runs kernels of its own in f32).
        let rows = |t: Tensor<A, 4>| t.inner().cast(dtype).reshape([30, 16]);
        let by_ops = model::norm::forward_by_ops(rows(x.clone()), gain.clone().inner(), eps);
        let (dx, dgain) = model::norm::backward_by_ops(rows(x.clone()), gain.clone().inner(), eps, w.clone().inner().reshape([30, 16]));
        let flat = |t: Tensor<B, 2>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
        close(&format!("norm by ops {dtype:?}: output"), &flat(by_ops), &burns.0, tol);
        close(&format!("norm by ops {dtype:?}: d x"), &flat(dx), &burns.1, if dtype == BF16 { 8e-3 } else { tol });
        close(&format!("norm by ops {dtype:?}: d gain"), &dgain.into_data().to_vec::<f32>().unwrap(), &burns.2, 1e-4);
    }
    // Gates past e^x's f32 range too (Flex's exp saturates to 0 and +inf there; silu(−100) is
    // −100·σ(−100) ≈ 0, not −100).
    let extremes = Tensor::<A, 1>::from_floats([-100.0, -90.0, -88.6, -88.0, -60.0, 60.0, 88.0, 88.6, 90.0, 100.0], &device);
    let gate = normal([2, 5, 3, 16]).mul_scalar(3.0).slice_assign([0..1, 0..1, 0..1, 0..10], extremes.reshape([1, 1, 1, 10]));
    let (gate, up) = (gate.require_grad(), normal([2, 5, 3, 16]).require_grad());
    let acts: [&dyn Fn(Tensor<A, 4>, Tensor<A, 4>) -> Tensor<A, 4>; 2] = [&|g, u| model::swiglu::swiglu(g, u), &|g, u| silu(g) * u];
    let [ours, burns] = acts.map(|f| {
        let out = f(gate.clone(), up.clone());
        let g = (out.clone() * w.clone()).sum().backward();
        [data(out.inner()), data(gate.grad(&g).unwrap()), data(up.grad(&g).unwrap())]
    });
    let by_ops = model::swiglu::forward_by_ops(gate.clone().inner(), up.clone().inner());
    let [d_gate, d_up] = model::swiglu::backward_by_ops(gate.clone().inner(), up.clone().inner(), w.clone().inner());
    let by_ops = [data(by_ops), data(d_gate), data(d_up)];
    for (name, (a, b)) in ["swiglu: output", "swiglu: d gate", "swiglu: d up"].iter().zip(ours.iter().zip(&burns)) {
        close(name, a, b, 1e-5);
    }
    for (name, (a, b)) in ["swiglu by ops: output", "swiglu by ops: d gate", "swiglu by ops: d up"].iter().zip(by_ops.iter().zip(&burns)) {
        close(name, a, b, 1e-5);
    }
}

#[cfg(feature = "wgpu-kernels")]
#[test]
fn norm_swiglu_and_rope_kernels_match_the_ops_they_replace() {
    // The CUDA build's kernels for RMSNorm (forward, backward), silu(gate) ∘ up (forward,
    // backward) and RoPE, run on wgpu (lavapipe), against the ops they replace
    // (`model::norm`, `model::swiglu`, `model::rope`: tested against burn's autodiff above)
    // on Flex from the same values: f32 to f32 precision, f16 within f16's rounding of the
    // results. Rows shorter and longer than a cube's 128 threads, and more rows than a grid
    // dimension holds (65,535).
    use burn::tensor::FloatDType::{self, F16, F32};
    use burn::tensor::TensorPrimitive;
    use model::backend::kernels;
    let (gpu, cpu) = (cubecl::wgpu::WgpuDevice::default(), Default::default());
    W::seed(&gpu, 17);
    let normal = |shape: Vec<usize>, dtype: FloatDType| Tensor::<W, 1>::random([shape.iter().product::<usize>()], burn::tensor::Distribution::Normal(0.0, 2.0), &gpu).cast(dtype);
    let host = |t: Tensor<W, 1>| t.cast(F32).into_data().to_vec::<f32>().unwrap();
    let on_cpu = |v: &[f32], _: &[usize]| Tensor::<B, 1>::from_floats(v, &cpu);
    let kernel_out = |x: burn::tensor::ops::FloatTensor<W>| host(Tensor::<W, 1>::from_primitive(TensorPrimitive::Float(x)).reshape([-1]));
    let check = |name: String, got: Vec<f32>, want: Vec<f32>, tol: f32| {
        let scale = want.iter().fold(1f32, |m, w| m.max(w.abs()));
        let err = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        assert!(got.len() == want.len() && err <= tol * scale, "{name}: max |Δ| {err} (max |want| {scale})");
    };
    let prim = |t: Tensor<W, 1>, shape: &[usize]| <W as burn::tensor::ops::FloatTensorOps<W>>::float_reshape(t.into_primitive().tensor(), shape.to_vec().into());
    for (dtype, tol) in [(F32, 2e-6), (F16, 1e-3)] {
        for [rows, n] in [[300, 96], [5, 1030], [70_000, 4]] {
            let (x, dy) = (normal(vec![rows * n], dtype), normal(vec![rows * n], F32));
            let gain = normal(vec![n], F32).add_scalar(1.0);
            let (xv, dyv, gv) = (host(x.clone()), host(dy.clone()), host(gain.clone()));
            let x2 = |v: &[f32]| on_cpu(v, &[]).reshape([rows, n]);
            let want_y = model::norm::forward_by_ops(x2(&xv), on_cpu(&gv, &[]), 1e-6);
            let (want_dx, want_dgain) = model::norm::backward_by_ops(x2(&xv), on_cpu(&gv, &[]), 1e-6, x2(&dyv));
            let flat = |t: Tensor<B, 2>| t.into_data().to_vec::<f32>().unwrap();
            let y = kernel_out(kernels::rms_norm(prim(x.clone(), &[rows, n]), gain.clone().into_primitive().tensor(), 1e-6));
            let [dx, dgain] = kernels::rms_norm_backward(prim(x, &[rows, n]), gain.into_primitive().tensor(), 1e-6, prim(dy, &[rows, n])).map(kernel_out);
            let what = format!("norm {dtype:?} {rows} x {n}");
            check(format!("{what}: y"), y, flat(want_y), 2e-6);
            check(format!("{what}: dx"), dx, flat(want_dx), tol);
            check(format!("{what}: d gain"), dgain, want_dgain.into_data().to_vec::<f32>().unwrap(), 1e-4);
        }
        let shape = [37, 1000];
        let (gate, up, d_out) = (normal(shape.to_vec(), dtype), normal(shape.to_vec(), dtype), normal(shape.to_vec(), dtype));
        let (gv, uv, dv) = (host(gate.clone()), host(up.clone()), host(d_out.clone()));
        let c = |v: &[f32]| on_cpu(v, &[]).reshape(shape);
        let flat = |t: Tensor<B, 2>| t.into_data().to_vec::<f32>().unwrap();
        let want = flat(model::swiglu::forward_by_ops(c(&gv), c(&uv)));
        let [want_dg, want_du] = model::swiglu::backward_by_ops(c(&gv), c(&uv), c(&dv)).map(flat);
        check(format!("swiglu {dtype:?}"), kernel_out(kernels::swiglu(prim(gate.clone(), &shape), prim(up.clone(), &shape))), want, tol);
        let [dg, du] = kernels::swiglu_backward(prim(gate, &shape), prim(up, &shape), prim(d_out, &shape)).map(kernel_out);
        check(format!("swiglu {dtype:?}: d gate"), dg, want_dg, tol);
        check(format!("swiglu {dtype:?}: d up"), du, want_du, tol);
        let (xs, cs) = ([2, 7, 3, 16], [2, 7, 1, 16]);
        let (x, cos, sin) = (normal(xs.to_vec(), dtype), normal(cs.to_vec(), dtype), normal(cs.to_vec(), dtype));
        let (xv, cv, sv) = (host(x.clone()), host(cos.clone()), host(sin.clone()));
        let want = model::rope::apply_rotary(on_cpu(&xv, &[]).reshape(xs), on_cpu(&cv, &[]).reshape(cs), on_cpu(&sv, &[]).reshape(cs));
        let got = kernel_out(kernels::rotary(prim(x, &xs), prim(cos, &cs), prim(sin, &cs)));
        check(format!("rope {dtype:?}"), got, want.into_data().to_vec::<f32>().unwrap(), tol);
    }
}

#[cfg(feature = "wgpu-kernels")]
#[test]
fn add_rows_kernel_adds_in_place_and_leaves_a_shared_sum_alone() {
    // The attention backward's sums over blocks of queries on the CUDA build
    // (`kernels::add_rows`: a cast, a slice, an add and a slice_assign in one kernel), on
    // wgpu (lavapipe), against the same by burn's ops on Flex: rows added at an offset,
    // from f32 and f16 blocks; a sum that another tensor shares is left as it was.
    use burn::tensor::FloatDType::{self, F16, F32};
    use burn::tensor::TensorPrimitive;
    use model::backend::kernels;
    let (gpu, cpu) = (cubecl::wgpu::WgpuDevice::default(), Default::default());
    W::seed(&gpu, 31);
    let host = |t: &Tensor<W, 4>| t.clone().cast(F32).into_data().to_vec::<f32>().unwrap();
    let normal = |shape: [usize; 4], dtype: FloatDType| Tensor::<W, 4>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &gpu).cast(dtype);
    for dtype in [F32, F16] {
        let (sum, x) = (normal([2, 3, 300, 16], F32), normal([2, 3, 70, 16], dtype));
        let on_cpu = |t: &Tensor<W, 4>| Tensor::<B, 4>::from_data(TensorData::new(host(t), t.dims()), &cpu);
        let range = [0..2, 0..3, 200..270, 0..16];
        let want = on_cpu(&sum).slice_assign(range.clone(), on_cpu(&sum).slice(range) + on_cpu(&x)).into_data().to_vec::<f32>().unwrap();
        let before = host(&sum);
        let kept = sum.clone(); // shared: the kernel must not write into it
        let got = Tensor::<W, 4>::from_primitive(TensorPrimitive::Float(kernels::add_rows(sum.into_primitive().tensor(), x.clone().into_primitive().tensor(), 200)));
        assert_eq!(host(&kept), before, "{dtype:?}: a shared sum was written");
        assert_eq!(host(&got), want, "{dtype:?}: shared sum, added into a copy");
        // Alone: in place, the same values.
        let alone = Tensor::<W, 4>::from_data(TensorData::new(before.clone(), [2, 3, 300, 16]), &gpu);
        let got = Tensor::<W, 4>::from_primitive(TensorPrimitive::Float(kernels::add_rows(alone.into_primitive().tensor(), x.into_primitive().tensor(), 200)));
        assert_eq!(host(&got), want, "{dtype:?}: added in place");
    }
}

#[cfg(feature = "wgpu-kernels")]
#[test]
fn adamw_kernel_matches_the_ops_it_replaces() {
    // The CUDA build's AdamW step (`backend/kernels/adamw.rs`), run on wgpu (lavapipe),
    // against burn's AdamW arithmetic as tensor ops (`model::adamw::step_by_ops`, which the
    // trainer's tests hold to burn's AdamW bit for bit) on Flex from the same values: three
    // steps (the second with its gradient clipped), with and without weight decay, a weight
    // of more elements than a grid dimension holds cubes. Within f32 rounding (a GPU may fuse a product and a sum).
    use burn::tensor::TensorPrimitive;
    use model::adamw::{step_by_ops, AdamWStep};
    use model::backend::kernels;
    let (gpu, cpu) = (cubecl::wgpu::WgpuDevice::default(), Default::default());
    W::seed(&gpu, 23);
    let n = 300_001;
    let host = |t: &Tensor<W, 1>| t.to_data().to_vec::<f32>().unwrap();
    let on_cpu = |t: &Tensor<W, 1>| Tensor::<B, 1>::from_floats(host(t).as_slice(), &cpu);
    let prim = |t: Tensor<W, 1>| t.into_primitive().tensor();
    let tensor = |x| Tensor::<W, 1>::from_primitive(TensorPrimitive::Float(x));
    for wd in [0.0, 0.1] {
        let p = Tensor::<W, 1>::random([n], burn::tensor::Distribution::Normal(0.0, 1.0), &gpu);
        let (mut gpu_state, mut cpu_state) = ([p.clone(), p.zeros_like(), p.zeros_like()], [on_cpu(&p), Tensor::zeros([n], &cpu), Tensor::zeros([n], &cpu)]);
        for t in 1..=3 {
            let g = Tensor::<W, 1>::random([n], burn::tensor::Distribution::Normal(0.0, 10f64.powi(1 - t as i32)), &gpu);
            let clip = if t == 2 { 0.37 } else { 1.0 }; // the gradient clipped on step 2
            let s = AdamWStep::new(1e-3 * t as f64, 0.9, 0.95, 1e-8, wd, t, clip);
            let [p, m, v] = gpu_state;
            gpu_state = kernels::adamw(prim(p), prim(g.clone()), prim(m), prim(v), s).map(tensor);
            let [p, m, v] = cpu_state;
            cpu_state = step_by_ops(p, on_cpu(&g), m, v, s);
            for (what, got, want) in [("weight", 0, 0), ("m", 1, 1), ("v", 2, 2)].map(|(w, a, b)| (w, host(&gpu_state[a]), cpu_state[b].to_data().to_vec::<f32>().unwrap())) {
                let scale = want.iter().fold(0f32, |m, w| m.max(w.abs()));
                let bad = got.iter().zip(&want).filter(|(g, w)| (*g - *w).abs() > 2e-6 * w.abs() + 1e-7 * scale).count();
                let exact = got.iter().zip(&want).filter(|(g, w)| g.to_bits() == w.to_bits()).count();
                eprintln!("weight decay {wd}, step {t}: {what}: {exact} of {n} the same bits");
                assert!(got.len() == want.len() && bad == 0, "weight decay {wd}, step {t}: {what}: {bad} of {n} past f32 rounding");
            }
        }
    }
}

#[cfg(feature = "wgpu-kernels")]
#[test]
fn a_training_step_on_the_gpu_backend_matches_the_cpu_one() {
    // The CUDA build's backend as a whole (burn's cubecl backend with our ops and kernels:
    // training attention by blocks with its softmax kernels, RMSNorm, silu(gate) ∘ up, RoPE,
    // the LM head's chunked ops), run on wgpu (lavapipe) against Flex from the same saved
    // checkpoint (the demo's shape cut to two layers, GQA): the loss of two packed rows of 600 tokens (more than
    // a block of queries; two documents in one, one in the other) and every parameter's
    // gradient, with and without checkpointing. In f32, to f32 precision.
    use burn::backend::Autodiff;
    use burn::module::{ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    use model::AttnMask;
    struct Grads<'a>(&'a GradientsParams, Vec<Vec<f32>>);
    impl<Ab: burn::tensor::backend::AutodiffBackend> ModuleVisitor<Ab> for Grads<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Ab, D>>) {
            let g = self.0.get::<Ab::InnerBackend, D>(p.id).expect("every parameter has a gradient");
            self.1.push(g.into_data().to_vec::<f32>().unwrap());
        }
    }
    fn step<Ab: model::TrainingBackend>(dir: &Path, checkpointing: bool, device: &Ab::Device) -> (f32, Vec<Vec<f32>>) {
        let compute = model::Compute { gradient_checkpointing: checkpointing, ..Default::default() };
        let model = Checkpoint::<Ab>::load(dir, device).unwrap().model.with_compute(compute);
        let (t, vocab) = (600, model.vocab_size() as i64);
        let ids: Vec<i64> = (0..2 * t as i64).map(|i| (i * 7919 + 13) % vocab).collect();
        let tokens = Tensor::<Ab, 2, Int>::from_data(TensorData::new(ids.clone(), [2, t]), device);
        let positions = vec![(0..350).chain(0..250).collect::<Vec<usize>>(), (0..t).collect()];
        let mask = AttnMask::Documents(vec![vec![350, 250], vec![t]]);
        let targets = Tensor::<Ab, 1, Int>::from_data(TensorData::new(ids.iter().map(|x| (x * 31 + 5) % vocab).collect::<Vec<i64>>(), [2 * t]), device);
        let (loss, grads) = model.loss_and_grads(tokens, &positions, &mask, |m, hidden| {
            let h = hidden.dims()[2];
            m.token_logprobs(hidden.reshape([2 * t, h]), targets, 1.0).0.sum().neg()
        });
        let mut all = Grads(&grads, vec![]);
        model.visit(&mut all);
        (loss.into_scalar().elem::<f32>(), all.1)
    }
    let dir = tempfile::tempdir().unwrap();
    let mut json = read_json(&root().join("configs/tiny-default.json"));
    json["num_hidden_layers"] = 2.into();
    std::fs::write(dir.path().join("shape.json"), json.to_string()).unwrap();
    let cfg = Qwen3Config::from_file(&dir.path().join("shape.json")).unwrap();
    let (cpu, gpu) = (Default::default(), cubecl::wgpu::WgpuDevice::default());
    B::seed(&cpu, 29);
    model::checkpoint::save(&Qwen3::<B>::init(&cfg, &cpu), &cfg, dir.path(), 1 << 30).unwrap();
    for checkpointing in [false, true] {
        let (want_loss, want) = step::<Autodiff<B>>(dir.path(), checkpointing, &cpu);
        let (loss, got) = step::<Autodiff<W>>(dir.path(), checkpointing, &gpu);
        assert!((loss - want_loss).abs() <= 1e-5 * want_loss.abs(), "checkpointing {checkpointing}: loss {loss} vs Flex {want_loss}");
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            let err = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(g.len() == w.len() && err <= 1e-4 * scale, "checkpointing {checkpointing}: parameter {i}'s gradient: max |Δ| {err} (max {scale})");
        }
    }
}

#[test]
fn prefill_by_blocks_equals_one_attention_call() {
    // The default prefill (what CUDA runs): burn's attention a block of 64 queries at a
    // time against the keys up to its last query, against the same over all queries at
    // once: a prompt after a cache of 37 positions with left padding (true = masked) and
    // GQA (2 query heads a KV head), and a plain causal prompt; same numbers to rounding.
    use model::backend::prefill_by_blocks;
    let device = Default::default();
    B::seed(&device, 19);
    let normal = |shape: [usize; 4]| Tensor::<B, 4>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let (b, h, kvh, t, past, d) = (2, 4, 2, 150, 37, 16);
    let keys = past + t;
    let (q, k, v) = (normal([b, h, t, d]), normal([b, kvh, keys, d]), normal([b, kvh, keys, d]));
    let first = [0usize, 20]; // each row's first real key (left padding before it)
    let masked: Vec<bool> = (0..b).flat_map(|r| (0..t).flat_map(move |i| (0..keys).map(move |j| j > past + i || j < first[r]))).collect();
    let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(masked, [b, 1, t, keys]), &device);
    let data = |t: Tensor<B, 4>| t.into_data().to_vec::<f32>().unwrap();
    let same = |a: Vec<f32>, b: Vec<f32>, what: &str| {
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(a.len() == b.len() && worst <= 1e-5, "{what}: max |Δ| {worst}");
    };
    let whole = prefill_by_blocks(q.clone(), k.clone(), v.clone(), Some(mask.clone()), t);
    same(data(prefill_by_blocks(q.clone(), k.clone(), v.clone(), Some(mask), 64)), data(whole), "left padding after a cache");
    let (k, v) = (k.slice([0..b, 0..kvh, past..keys, 0..d]), v.slice([0..b, 0..kvh, past..keys, 0..d]));
    let whole = prefill_by_blocks(q.clone(), k.clone(), v.clone(), None, t);
    same(data(prefill_by_blocks(q, k, v, None, 64)), data(whole), "causal");
}
