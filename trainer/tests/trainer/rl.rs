//! Stage 3's parts against hand-computed values: group advantages, the clipped GRPO loss
//! and its gradient (aggregations, KL), each reward part on crafted trajectories, the
//! observation mask on real gradients, and hostile cells inside a rollout.
use crate::cli::root;
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use datasets::RlTask;
use model::{Checkpoint, Tokenizer};
use sandbox::{Sandbox, SandboxConfig};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use trainer::grpo::{self, GrpoSpec, TokenTerms};
use trainer::reward::{self, Parts, RewardSpec};
use trainer::rl::{packed_row, policy_grads};
use trainer::rollout::{run, run_cells, run_on_devices, Env, RolloutConfig, Trajectory};
use trainer::sft::TrainBackend;
use trainer::step::trained_logprobs;

type B = TrainBackend;

fn spec(toml_text: &str) -> GrpoSpec {
    toml::from_str(toml_text).unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

#[test]
fn advantages_are_normalized_within_each_group() {
    // Group 1: mean 0.5, sample std sqrt(1/3) → ±0.5 / (0.5773503 + 1e-6); group 2 has no variance.
    let a = grpo::advantages(&[1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 0.3, 0.3], 4, true, 1e-6);
    let want = 0.5 / ((1.0f64 / 3.0).sqrt() + 1e-6);
    for (got, w) in a.iter().zip([want, -want, -want, want, 0.0, 0.0, 0.0, 0.0]) {
        assert!(close(*got, w, 1e-12), "{a:?}");
    }
    let centered = grpo::advantages(&[2.0, 0.0, 1.0], 3, false, 1e-6);
    assert_eq!(centered, vec![1.0, -1.0, 0.0]);
    assert!(grpo::has_variance(&[1.0, 0.0]) && !grpo::has_variance(&[-1.0, -1.0, -1.0]));
}

/// Loss and d loss / d logp of the GRPO objective for `logp`, against the hand values.
fn check_loss(s: &GrpoSpec, logp: &[f32], terms: &TokenTerms, want_loss: f64, want_grad: &[f64], want_clipped: f64) {
    let device = Default::default();
    let lp = Tensor::<B, 1>::from_data(TensorData::new(logp.to_vec(), [logp.len()]), &device).require_grad();
    let (loss, stats) = grpo::loss(lp.clone(), None, terms, s);
    let v = loss.clone().into_scalar().elem::<f64>();
    assert!(close(v, want_loss, 1e-5), "loss {v} vs hand {want_loss}");
    let grads = loss.backward();
    let g: Vec<f32> = lp.grad(&grads).unwrap().into_data().to_vec().unwrap();
    for (i, (a, b)) in g.iter().zip(want_grad).enumerate() {
        assert!(close(*a as f64, *b, 1e-5), "d loss / d logp[{i}] = {a} vs hand {b}");
    }
    assert_eq!(stats.clipped, want_clipped);
}

#[test]
fn grpo_loss_and_gradient_match_a_hand_computed_example() {
    // Four tokens, ratio ρ = exp(logp - old), clip to [0.8, 1.2]:
    //  t0: ρ = e^0.2 = 1.2214, A = +1 → clipped at 1.2: term -1.2, no gradient
    //  t1: ρ = 1,             A = -1 → term 1, gradient -A·ρ = 1
    //  t2: ρ = e^-1 = 0.3679, A = +1 → unclipped (the min of the objective): term -0.3679, gradient -0.3679
    //  t3: ρ = e^-1,          A = -1 → clipped at 0.8: term 0.8, no gradient
    let logp = [-1.0f32, -0.5, -2.0, -2.0];
    let e1 = (-1.0f64).exp();
    let terms = |w: [f32; 4]| TokenTerms { old_logp: vec![-1.2, -0.5, -1.0, -1.0], advantage: vec![1.0, -1.0, 1.0, -1.0], weight: w.to_vec(), ref_logp: None };
    let s = spec("clip_low = 0.2\nclip_high = 0.2");
    // token-mean: every token weighs 1/4.
    let q = 0.25;
    check_loss(&s, &logp, &terms([q as f32; 4]), q * (-1.2 + 1.0 - e1 + 0.8), &[0.0, q, -q * e1, 0.0], 2.0);
    // seq-mean over two sequences [t0] and [t1 t2 t3]: weights 1/(2·1) and 1/(2·3).
    let (a, b) = (0.5, 1.0 / 6.0);
    check_loss(&s, &logp, &terms([a as f32, b as f32, b as f32, b as f32]), a * -1.2 + b * (1.0 - e1 + 0.8), &[0.0, b, -b * e1, 0.0], 2.0);
    // Clip-higher: with clip_high 0.28, t0 (ρ = 1.2214 < 1.28) is no longer clipped.
    let e02 = 0.2f64.exp();
    check_loss(&spec("clip_low = 0.2\nclip_high = 0.28"), &logp, &terms([q as f32; 4]), q * (-e02 + 1.0 - e1 + 0.8), &[-q * e02, q, -q * e1, 0.0], 1.0);
    // KL k3 to a reference, β = 0.1: d = ref - logp; k3 = e^d - d - 1, d k3 / d logp = 1 - e^d.
    let refs = [-1.0f32, -1.0, -1.5, -2.5];
    let mut t = terms([q as f32; 4]);
    t.ref_logp = Some(refs.to_vec());
    let (mut want, mut grad) = (q * (-1.2 + 1.0 - e1 + 0.8), vec![0.0, q, -q * e1, 0.0]);
    for i in 0..4 {
        let d = refs[i] as f64 - logp[i] as f64;
        want += q * 0.1 * (d.exp() - d - 1.0);
        grad[i] += q * 0.1 * (1.0 - d.exp());
    }
    check_loss(&spec("clip_low = 0.2\nclip_high = 0.2\nkl_coef = 0.1\nkl = \"k3\""), &logp, &t, want, &grad, 2.0);
    // k1: KL term logp - ref, gradient β per token.
    let (mut want, mut grad) = (q * (-1.2 + 1.0 - e1 + 0.8), vec![0.0, q, -q * e1, 0.0]);
    for i in 0..4 {
        want += q * 0.1 * (logp[i] - refs[i]) as f64;
        grad[i] += q * 0.1;
    }
    check_loss(&spec("clip_low = 0.2\nclip_high = 0.2\nkl_coef = 0.1\nkl = \"k1\""), &logp, &t, want, &grad, 2.0);
}

fn task(kind: &str, truth: Option<&str>, judge: Option<&str>) -> RlTask {
    RlTask {
        id: "t".into(),
        kind: kind.into(),
        prompt: "# Instruction\nHow many rows?\n\n# Data\nFile 1:\n{\"name\": \"a.csv\", \"size\": \"1KB\"}".into(),
        workspace: ".".into(),
        files: vec![],
        ground_truth: truth.map(String::from),
        judge: judge.map(String::from),
        source: "test".into(),
        metadata: "{}".into(),
    }
}

fn trajectory(text: &str, observations: &[&str], workspace: Option<sandbox::Workspace>) -> Trajectory {
    Trajectory {
        task: 0,
        prompt_ids: vec![],
        ids: vec![],
        mask: vec![],
        logprobs: vec![],
        text: text.into(),
        observations: observations.iter().map(|s| s.to_string()).collect(),
        failed_cells: observations.iter().filter(|o| o.starts_with("[Error]")).count(),
        sandbox_secs: 0.0,
        finished: true,
        workspace,
    }
}

fn sandbox() -> Sandbox {
    let python = std::env::var_os(sandbox::PYTHON_ENV).map_or_else(|| root().join(".venv-sandbox/bin/python"), Into::into);
    let limits = sandbox::Limits { timeout: std::time::Duration::from_secs(2), ..Default::default() };
    Sandbox::new(SandboxConfig { python, workers: 3, limits, ..SandboxConfig::default() }).unwrap()
}

const GOOD: &str = "<Analyze>\nCount the rows.\n</Analyze>\n<Code>\n```python\nprint(1/0)\n```\n</Code>\n<Execute>\n[Error]:\nZeroDivisionError\n</Execute>\n\
<Code>\n```python\nprint('@rows[32]')\n```\n</Code>\n<Execute>\n@rows[32]\n</Execute>\n<Answer>\n@rows[32] @mean[3.6000001]\n</Answer>";

#[test]
fn a_trajectory_s_cells_are_its_fenced_code_and_observations() {
    // What the Inspector re-runs when a local checkpoint solves synth tasks.
    let t = trajectory(GOOD, &["[Error]:\nZeroDivisionError", "@rows[32]"], None);
    assert_eq!(t.code_cells(), vec![("print(1/0)".into(), "[Error]:\nZeroDivisionError".into()), ("print('@rows[32]')".into(), "@rows[32]".into())]);
    // A cell without a fence ran nothing (the published "no code" error): empty code.
    let t = trajectory("<Code>\nprint(2)\n</Code>\n<Execute>\nno code\n</Execute>\n", &["no code"], None);
    assert_eq!(t.code_cells(), vec![(String::new(), "no code".into())]);
}

#[test]
fn evaluation_reports_dabench_s_three_accuracies_and_levels() {
    // InfiAgent-DABench: ABQ (questions with every sub-answer right), PSAQ (mean share of
    // right sub-answers per question), UASQ (right sub-answers over all), by hand.
    use trainer::evaluate::{summarize, LevelSummary, Record};
    let t = |kind: &str, truth: Option<&str>, meta: &str| RlTask { id: format!("{kind} {meta}"), kind: kind.into(), metadata: meta.into(), ..task(kind, truth, None) };
    let tasks = [
        t("qa", Some(r#"[["a","1"],["b","2"],["c","3"]]"#), r#"{"level": "hard"}"#),
        t("qa", Some(r#"[["x","5"]]"#), r#"{"level": "easy"}"#),
        t("qa", Some(r#"[["m","1.5"],["n","2"]]"#), r#"{"level": "easy", "n": 2}"#),
        t("datatask", None, r#"{"difficulty": "medium"}"#),
    ];
    let texts = [
        "<Answer>\n@a[1] @b[2] @c[4]\n</Answer>",
        "<Analyze>\nx\n</Analyze>\n<Code>\n```python\nprint(5)\n```\n</Code>\n<Answer>\n@x[5]\n</Answer>",
        "<Answer>\n</Answer>",
        "<Answer>\ndone\n</Answer>",
    ];
    let records: Vec<Record> = tasks.iter().zip(texts).map(|(task, text)| Record::of(&trajectory(text, &[], None), task, 1e-6)).collect();
    assert_eq!(records.iter().map(|r| r.sub_answers).collect::<Vec<_>>(), [Some([2, 3]), Some([1, 1]), Some([0, 2]), None]);
    let s = summarize(&records);
    assert_eq!(s.correct, Some(1.0 / 3.0));
    assert!((s.sub_answers_proportional.unwrap() - (2.0 / 3.0 + 1.0 + 0.0) / 3.0).abs() < 1e-12);
    assert_eq!(s.sub_answers_uniform, Some(3.0 / 6.0));
    assert_eq!(s.by_level["easy"], LevelSummary { tasks: 2, well_formed: 0.5, correct: Some(0.5) });
    assert_eq!(s.by_level["hard"], LevelSummary { tasks: 1, well_formed: 0.0, correct: Some(0.0) });
    assert_eq!(s.by_level["medium"], LevelSummary { tasks: 1, well_formed: 0.0, correct: None });
    assert!(s.pass_at.is_empty() && s.samples == 1);
    // pass@k, unbiased (Chen et al. 2021): 1 - C(n-c, k) / C(n, k). 4 samples, 1 right:
    // pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1/2, pass@4 = 1; 4 samples, none right: 0.
    use trainer::evaluate::pass_at_k;
    assert_eq!([pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 1, 4), pass_at_k(4, 0, 2)], [0.25, 0.5, 1.0, 0.0]);
    assert!((pass_at_k(5, 2, 3) - (1.0 - 1.0 / 10.0)).abs() < 1e-12); // C(3,3)/C(5,3) = 1/10
    let right = "<Answer>\n@x[5]\n</Answer>";
    let wrong = "<Answer>\n@x[6]\n</Answer>";
    let samples: Vec<Record> = [right, wrong, wrong, wrong, wrong, wrong, wrong, wrong]
        .iter()
        .enumerate()
        .map(|(i, text)| Record { sample: i % 4, ..Record::of(&trajectory(text, &[], None), &tasks[if i < 4 { 1 } else { 2 }], 1e-6) })
        .collect();
    let s = summarize(&samples);
    assert_eq!((s.tasks, s.samples, s.correct), (2, 4, Some(1.0 / 8.0)));
    assert_eq!(s.pass_at.into_iter().collect::<Vec<_>>(), [(1, 0.125), (2, 0.25), (4, 0.5)]);
}

#[test]
fn what_the_cells_wrote_is_copied_out() {
    // `trainer ask --out`: new files, and inputs the cells changed; not the untouched inputs.
    let sb = sandbox();
    let inputs = tempfile::tempdir().unwrap();
    std::fs::write(inputs.path().join("a.csv"), "x\n1\n").unwrap();
    std::fs::write(inputs.path().join("b.csv"), "y\n2\n").unwrap();
    let ws = sb.workspace(Some(inputs.path())).unwrap();
    let code = "import os\nopen('report.md', 'w').write('# Report')\nos.makedirs('figs')\nopen('figs/f.txt', 'w').write('f')\nopen('a.csv', 'a').write('3\\n')\nprint('ok')";
    assert_eq!(sb.run(&ws, code, sandbox::Mode::Stateless).observation.trim(), "ok");
    let out = tempfile::tempdir().unwrap();
    let written = trainer::rollout::copy_outputs(&ws, inputs.path(), out.path()).unwrap();
    let rel: Vec<String> = written.iter().map(|p| p.strip_prefix(out.path()).unwrap().display().to_string()).collect();
    assert_eq!(rel, ["a.csv", "figs/f.txt", "report.md"]);
    assert_eq!(std::fs::read_to_string(out.path().join("a.csv")).unwrap(), "x\n1\n3\n");
    assert_eq!(std::fs::read_to_string(out.path().join("report.md")).unwrap(), "# Report");
}

#[test]
fn reward_parts_on_crafted_trajectories() {
    let sb = sandbox();
    let spec = RewardSpec::default();
    let w = spec.resolved().unwrap();
    let qa = task("qa", Some(r#"[["rows", "32"], ["mean", "3.60"]]"#), None);
    let obs = ["[Error]:\nZeroDivisionError", "@rows[32]"];
    let score = |text: &str, t: &RlTask| reward::score(&trajectory(text, &obs, None), t, &spec, &sb);

    // Right answers (3.6000001 is 3.60 within 1e-6), one of two cells failed:
    // paper qa = (accuracy + code success) / 2 = (1 + 0.5) / 2.
    let p = score(GOOD, &qa);
    assert!(p.format_ok && p.accuracy == Some(1.0) && p.code_success == Some(0.5));
    assert!(close(p.turns, 0.2, 1e-12));
    assert!(close(p.total(&w["qa"], -1.0), 0.75, 1e-12));
    // Outside the tolerance, or an answer only printed by the code (not in <Answer>): wrong.
    assert_eq!(score(&GOOD.replace("3.6000001", "3.61"), &qa).accuracy, Some(0.0));
    assert_eq!(score(&GOOD.replace("@rows[32] @mean", "@mean"), &qa).accuracy, Some(0.0));
    // Broken format: the whole reward is the penalty.
    for broken in [GOOD.replace("</Answer>", ""), GOOD.replace("<Analyze>", ""), GOOD.replace("```python\nprint('@rows", "print('@rows")] {
        let p = score(&broken, &qa);
        assert!(!p.format_ok, "{broken}");
        assert_eq!(p.total(&w["qa"], -1.0), -1.0);
    }
    // No cell at all: no interaction, so code success is 0 (skipping the code never pays).
    let p = reward::score(&trajectory("<Analyze>\nx\n</Analyze>\n<Answer>\n@rows[32] @mean[3.6]\n</Answer>", &[], None), &qa, &spec, &sb);
    assert_eq!((p.code_success, p.accuracy), (Some(0.0), Some(1.0)));
    assert!(close(p.total(&w["qa"], -1.0), 0.5, 1e-12));
    // Turns: min(T / 10, 1).
    let many: Vec<&str> = std::iter::repeat_n("ok", 12).collect();
    assert_eq!(reward::score(&trajectory(GOOD, &many, None), &qa, &spec, &sb).turns, 1.0);

    // A data task's file check runs in the trajectory's own workspace.
    let check = r#"{"method": "dabench", "file_check": "import os\nprint('OK' if os.path.exists('out.csv') else 'missing')"}"#;
    let dt = task("datatask", Some("[]"), Some(check));
    let with_file = sb.workspace(None).unwrap();
    std::fs::write(with_file.path().join("out.csv"), "a\n1\n").unwrap();
    let p = reward::score(&trajectory(GOOD, &obs, Some(with_file)), &dt, &spec, &sb);
    assert_eq!((p.checklist, p.accuracy), (Some(1.0), None));
    assert!(close(p.total(&w["datatask"], -1.0), 0.75, 1e-12)); // (checklist + success) / 2
    let p = reward::score(&trajectory(GOOD, &obs, Some(sb.workspace(None).unwrap())), &dt, &spec, &sb);
    assert_eq!(p.checklist, Some(0.0));

    // Weights override the preset; unknown parts and kinds are named.
    let mut s2 = RewardSpec::default();
    s2.weights.insert("qa".into(), BTreeMap::from([("accuracy".to_string(), 3.0)]));
    assert!(close(Parts { format_ok: true, accuracy: Some(1.0), code_success: Some(0.0), ..Default::default() }.total(&s2.resolved().unwrap()["qa"], -1.0), 0.75, 1e-12));
    s2.weights.insert("qa".into(), BTreeMap::from([("acuracy".to_string(), 1.0)]));
    assert!(s2.resolved().unwrap_err().to_string().contains("reward.weights.qa.acuracy"));
    // The published preset weighs a judge: without one configured, a clear error.
    let published = RewardSpec { preset: "published".into(), ..RewardSpec::default() };
    let e = published.check_judge(["qa"]).unwrap_err().to_string();
    assert!(e.contains("[reward.judge]") && e.contains("qa"), "{e}");
}

#[test]
fn the_llm_judge_is_asked_over_an_openai_compatible_endpoint() {
    // A one-shot local server standing in for the endpoint.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = String::new();
        while !got.contains("</Answer>") {
            let n = c.read(&mut buf).unwrap();
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let body = r#"{"choices": [{"message": {"content": " 7 / 10"}}]}"#;
        write!(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        got
    });
    let j = reward::JudgeSpec { base_url: format!("http://127.0.0.1:{port}/v1"), model: "judge".into(), api_key_env: None, max_chars: 100000 };
    let score = reward::judge(&j, &task("openresearch", None, None), GOOD).unwrap();
    assert!(close(score, 0.7, 1e-12));
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /v1/chat/completions"), "{request}");
    assert!(request.contains("How many rows?"), "the task reaches the judge");
}

/// The sft-parity fixture model (a transformers checkpoint) and its tokenizer.
fn fixture_model() -> Checkpoint<B> {
    Checkpoint::<B>::load(&root().join("trainer/tests/fixtures/sft-parity/model"), &Default::default()).unwrap()
}

/// Σ over positions i with mask[i+1] = 1 of log p(ids[i+1]), through the plain causal
/// forward (no packing, no row selection): the reference for the GRPO path.
fn masked_logprob_sum(model: &model::Qwen3<B>, ids: &[u32], mask: &[u8]) -> Tensor<B, 1> {
    let n = ids.len();
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, n]), &Default::default());
    let logp = log_softmax(model.forward(tokens), 2);
    let targets = Tensor::<B, 3, Int>::from_data(TensorData::new(ids[1..].iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, n - 1, 1]), &Default::default());
    let v = logp.slice([0..1, 0..n - 1]).gather(2, targets).reshape([n - 1]);
    let m: Vec<f32> = mask[1..].iter().map(|&x| x as f32).collect();
    (v * Tensor::from_data(TensorData::new(m, [n - 1]), &Default::default())).sum()
}

#[test]
fn observation_tokens_get_no_gradient() {
    let ck = fixture_model();
    let vocab = ck.config.vocab_size as u32;
    // Two trajectories: prompt, generated, an observation (masked), generated again.
    let make = |seed: u32, prompt: usize| {
        let ids: Vec<u32> = (0..24).map(|i| (i * 7 + seed * 13 + 3) % vocab).collect();
        let mask: Vec<u8> = (0..24).map(|i| u8::from(!(8..16).contains(&i))).collect();
        let prompt_ids: Vec<u32> = (0..prompt as u32).map(|i| (i * 5 + seed) % vocab).collect();
        Trajectory { prompt_ids, ids, mask, ..trajectory("", &[], None) }
    };
    let mut trajs = vec![make(1, 6), make(2, 9)];
    // Rollout log-probs = the current policy's: every ratio is 1, nothing is clipped.
    for t in trajs.iter_mut() {
        let (lp, _) = trained_logprobs(&ck.model.valid(), &[packed_row(&[&*t])], 1.0).unwrap();
        let lp: Vec<f32> = lp.into_data().to_vec().unwrap();
        let mut k = 0;
        t.logprobs = t.mask.iter().map(|&m| if m == 1 { k += 1; lp[k - 1] } else { 0.0 }).collect();
    }
    let adv = [1.0, -0.5];
    // Both trajectories in one micro-batch on one device, or one each on two data-parallel
    // replicas (on CPU both replicas share the one device).
    for (micro_batch_tokens, devices) in [(100000, 1), (40, 2)] {
    let spec = spec(&format!("micro_batch_tokens = {micro_batch_tokens}"));
    let devices = model::devices(devices).unwrap();
    let (grads, stats) = policy_grads(&ck.model, &trajs, &[0, 1], &adv, &[], &spec, 4096, 1.0, &devices).unwrap();
    assert_eq!(stats.tokens, 2 * 16);
    assert!(stats.kl_old.abs() < 1e-4 && stats.clipped == 0.0);

    // At ρ = 1 the token-mean loss is -(1/N) Σ_k A_k Σ_{generated t} log p(t): compute its
    // gradient through the plain forward, once with the observation masked and once not.
    let reference = |with_obs: bool| {
        let mut loss = Tensor::<B, 1>::zeros([1], &Default::default());
        for (t, a) in trajs.iter().zip(adv) {
            let ids: Vec<u32> = t.prompt_ids.iter().chain(&t.ids).copied().collect();
            let mask: Vec<u8> = std::iter::repeat_n(0, t.prompt_ids.len()).chain(t.mask.iter().map(|&m| if with_obs { 1 } else { m })).collect();
            loss = loss + masked_logprob_sum(&ck.model, &ids, &mask).mul_scalar(-a / 32.0);
        }
        loss.backward()
    };
    let ours = |p: &burn::module::Param<Tensor<B, 2>>| grads.get::<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend, 2>(p.id).unwrap().into_data().to_vec::<f32>().unwrap();
    let theirs = |g: &<B as burn::tensor::backend::AutodiffBackend>::Gradients, p: &burn::module::Param<Tensor<B, 2>>| p.val().grad(g).unwrap().into_data().to_vec::<f32>().unwrap();
    let masked = reference(false);
    let unmasked = reference(true);
    let layer = &ck.model.layers[0];
    for (name, p) in [("embed_tokens", &ck.model.embed_tokens.weight), ("layers.0.q_proj", &layer.self_attn.q_proj.weight), ("layers.0.down_proj", &layer.mlp.down_proj.weight)] {
        let (a, b, c) = (ours(p), theirs(&masked, p), theirs(&unmasked, p));
        let scale = b.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let obs_diff = a.iter().zip(&c).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-4 * scale, "{} device(s): {name}: GRPO gradient differs from the masked reference by {diff} (scale {scale})", devices.len());
        assert!(obs_diff > 1e-2 * scale, "{name}: training on observations would change the gradient, but it did not ({obs_diff})");
    }
    }
}

#[test]
fn a_hostile_cell_costs_its_own_trajectory_only() {
    let sb = sandbox();
    let tok = Tokenizer::train_bpe(["<Execute>\n45\n</Execute>", "[Error]:\nTraceback"].iter(), 300).unwrap();
    let cell = |code: &str| format!("<Analyze>\nx\n</Analyze>\n<Code>\n```python\n{code}\n```\n</Code>");
    let codes = [
        "print(sum(range(10)))",
        "import os\nwhile True:\n    os.fork()",
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "while True:\n    pass",
        "import sys\nsys.exit(3)",
    ];
    let mut trajs: Vec<Trajectory> = codes.iter().map(|c| trajectory(&cell(c), &[], Some(sb.workspace(None).unwrap()))).collect();
    for t in trajs.iter_mut() {
        t.observations.clear();
        t.failed_cells = 0;
    }
    let which: Vec<usize> = (0..trajs.len()).collect();
    run_cells(&sb, &tok, &mut trajs, &which, 1 << 20).unwrap();
    assert_eq!(trajs[0].observations, vec!["45\n".to_string()]);
    assert_eq!(trajs[0].failed_cells, 0);
    // Each trajectory carries its own cells' sandbox time: the endless loop ran to the 2 s
    // limit, the sum well under it.
    assert!(trajs[3].sandbox_secs >= 2.0 && trajs[0].sandbox_secs > 0.0 && trajs[0].sandbox_secs < 1.0, "{:?}", trajs.iter().map(|t| t.sandbox_secs).collect::<Vec<_>>());
    for t in &trajs[1..] {
        assert_eq!(t.failed_cells, 1, "a hostile cell is an error observation: {:?}", t.observations);
        assert!(t.mask.iter().all(|&m| m == 0), "observations are masked");
    }
    // The reward: the benign trajectory's cells all ran, each hostile one's failed.
    let spec = RewardSpec::default();
    let qa = task("qa", Some(r#"[["n", "45"]]"#), None);
    let parts: Vec<Parts> = trajs.iter().map(|t| reward::score(t, &qa, &spec, &sb)).collect();
    assert_eq!(parts[0].code_success, Some(1.0));
    assert!(parts[1..].iter().all(|p| p.code_success == Some(0.0)));
    // And the sandbox still serves the next turn.
    run_cells(&sb, &tok, &mut trajs[..1], &[0], 1 << 20).unwrap();
    assert_eq!(trajs[0].observations.len(), 2);
}

#[test]
fn sampling_temperature_is_the_policy_the_update_scores() {
    // Tokens sampled at temperature 0.7 by the (KV-cached) generator: the packed training
    // forward gives each the same log-prob under softmax(logits / 0.7), so on-policy ratios
    // are 1; at temperature 1 they differ.
    let ck = fixture_model();
    let prompt: Vec<u32> = vec![3, 14, 15, 92, 65];
    let cfg = model::SamplingConfig { max_new_tokens: 12, temperature: 0.7, seed: 4, ..Default::default() };
    let g = model::generate(&ck.model, None, &[prompt.clone()], &cfg).remove(0);
    let t = Trajectory { prompt_ids: prompt, ids: g.tokens.clone(), mask: vec![1; g.tokens.len()], ..trajectory("", &[], None) };
    let scored = |temp: f32| -> Vec<f32> {
        trained_logprobs(&ck.model, &[packed_row(&[&t])], temp).unwrap().0.into_data().to_vec().unwrap()
    };
    let at = scored(0.7);
    assert_eq!(at.len(), g.logprobs.len());
    for (a, b) in at.iter().zip(&g.logprobs) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    assert!(scored(1.0).iter().zip(&g.logprobs).any(|(a, b)| (a - b).abs() > 1e-2));
}

#[test]
fn in_bf16_the_rollout_copy_samples_the_policy_the_update_scores() {
    // With `precision = "bf16"` rollouts come from a copy whose matrices are stored in
    // bf16 (`for_inference`), the update scores with f32 master weights cast per product.
    // Same weights, same ops; the cached decoder reduces in another order than the packed
    // forward, which in bf16 moves log-probs by rounding (about what bf16 moves them from
    // f32 on this model), not by the 1e-4 of f32.
    let compute = model::Compute { precision: model::Precision::Bf16, ..Default::default() };
    let master = fixture_model().model.with_compute(compute);
    let policy = master.for_inference();
    assert_eq!(policy.layers[0].mlp.up_proj.weight.val().dtype(), burn::tensor::DType::BF16);
    let prompt: Vec<u32> = vec![3, 14, 15, 92, 65];
    let cfg = model::SamplingConfig { max_new_tokens: 12, temperature: 0.7, seed: 4, ..Default::default() };
    let g = model::generate(&policy, None, &[prompt.clone()], &cfg).remove(0);
    let t = Trajectory { prompt_ids: prompt, ids: g.tokens.clone(), mask: vec![1; g.tokens.len()], ..trajectory("", &[], None) };
    let scored = |m: &model::Qwen3<B>| -> Vec<f32> { trained_logprobs(m, &[packed_row(&[&t])], 0.7).unwrap().0.into_data().to_vec().unwrap() };
    let max_diff = |a: &[f32]| a.iter().zip(&g.logprobs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let (bf16, f32) = (max_diff(&scored(&master)), max_diff(&scored(&fixture_model().model)));
    eprintln!("max |Δ log-prob| sampled vs update: bf16 {bf16}, f32 update {f32}");
    assert!(bf16 < 1e-2, "bf16 update {bf16}, f32 update {f32}");
}

#[test]
fn rollouts_shared_among_devices_are_their_shares_run_alone() {
    // Three tasks on two data-parallel devices (on CPU, replicas on the one device): device
    // 0 runs tasks 0-1 with the step's seed, device 1 task 2 with seed + 2^40; the result is
    // task-major with global task indices, as the shares run one by one.
    let ck = fixture_model();
    let tok = Tokenizer::train_bpe(["<Analyze>\nWhat is 2 + 3?\n</Analyze>\n<Code>\n```python\nprint(2 + 3)\n```\n</Code>"].iter(), 300).unwrap();
    assert!(tok.len() <= ck.config.vocab_size);
    let template = model::ChatTemplate::deepanalyze();
    let sb = sandbox();
    let policy = ck.model.valid();
    let env = Env { model: &policy, tok: &tok, template: &template, eos: &[0], sandbox: &sb };
    let tasks: Vec<RlTask> = (0..3)
        .map(|i| RlTask {
            id: format!("t{i}"),
            kind: "qa".into(),
            prompt: format!("What is {i} + 3?"),
            workspace: ".".into(),
            files: vec![],
            ground_truth: None,
            judge: None,
            source: "test".into(),
            metadata: "{}".into(),
        })
        .collect();
    let refs: Vec<&RlTask> = tasks.iter().collect();
    let dirs = vec![std::path::PathBuf::from("."); 3];
    let cfg = |seed: u64| RolloutConfig {
        max_turns: 2,
        max_new_tokens: 12,
        max_response_tokens: 40,
        sampling: model::SamplingConfig { temperature: 1.0, seed, ..Default::default() },
        max_rows: None,
    };
    let ids = |t: &[Trajectory]| -> Vec<(usize, Vec<u32>)> { t.iter().map(|t| (t.task, t.ids.clone())).collect() };
    let (shared, _) = run_on_devices(&env, &model::devices(2).unwrap(), &refs, &dirs, 2, &cfg(7), |_| {}).unwrap();
    let (first, _) = run(&env, &refs[..2], &dirs[..2], 2, &cfg(7), |_| {}).unwrap();
    let (second, _) = run(&env, &refs[2..], &dirs[2..], 2, &cfg(7 + (1 << 40)), |_| {}).unwrap();
    let mut want = ids(&first);
    want.extend(ids(&second).into_iter().map(|(t, i)| (t + 2, i)));
    assert_eq!(ids(&shared), want);
    assert_eq!(shared.iter().map(|t| t.task).collect::<Vec<_>>(), [0, 0, 1, 1, 2, 2]);
    assert!(shared.iter().all(|t| !t.ids.is_empty()));
    // One device is the plain run.
    let (one, _) = run_on_devices(&env, &model::devices(1).unwrap(), &refs, &dirs, 2, &cfg(7), |_| {}).unwrap();
    assert_eq!(ids(&one), ids(&run(&env, &refs, &dirs, 2, &cfg(7), |_| {}).unwrap().0));

    // At most 3 rows decoded together: waves of one task (a group of 2 is the unit), wave
    // w sampling with seed + w·2³², each as if run alone.
    let bounded = RolloutConfig { max_rows: Some(3), ..cfg(7) };
    let (waves, _) = run(&env, &refs, &dirs, 2, &bounded, |_| {}).unwrap();
    let mut want = vec![];
    for w in 0..3 {
        let (alone, _) = run(&env, &refs[w..w + 1], &dirs[w..w + 1], 2, &cfg(7 + ((w as u64) << 32)), |_| {}).unwrap();
        want.extend(ids(&alone).into_iter().map(|(_, i)| (w, i)));
    }
    assert_eq!(ids(&waves), want);
    // Greedy decoding does not depend on the waves: the same trajectories as one batch.
    let greedy = |max_rows| RolloutConfig { sampling: model::SamplingConfig { temperature: 0.0, ..Default::default() }, max_rows, ..cfg(7) };
    assert_eq!(ids(&run(&env, &refs, &dirs, 2, &greedy(Some(2)), |_| {}).unwrap().0), ids(&run(&env, &refs, &dirs, 2, &greedy(None), |_| {}).unwrap().0));
}

#[test]
fn a_bf16_replica_gives_the_autocast_gradients_to_the_bit() {
    // Data parallel with bf16 compute forks replicas whose decoder-layer matrices are
    // stored in bf16 (`with_layer_matrices_in`): the same loss, and every gradient equal to
    // the f32 master's under autocast once cast to f32 (the matrices' come out in bf16).
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::FloatDType;
    let ck = fixture_model();
    let model = ck.model.with_stable_ids().with_compute(model::Compute { precision: model::Precision::Bf16, gradient_checkpointing: false });
    let ids: Vec<u32> = (0..40).map(|i| (i * 7 % 50) as u32 + 3).collect();
    let t = Trajectory { prompt_ids: ids[..10].to_vec(), ids: ids[10..].to_vec(), mask: vec![1; 30], ..trajectory("", &[], None) };
    let row = packed_row(&[&t]);
    let grads = |m: &model::Qwen3<B>| trainer::step::trained_loss_grads(m, std::slice::from_ref(&row), 1.0, |lp, _| lp.sum().neg()).unwrap();
    let (loss, mut want) = grads(&model);
    let replica = model.clone().with_layer_matrices_in(FloatDType::BF16).fork(&Default::default());
    let (replica_loss, mut got) = grads(&replica);
    assert_eq!(loss, replica_loss);
    struct Compare<'a>(&'a mut burn::optim::GradientsParams, &'a mut burn::optim::GradientsParams, Vec<(usize, FloatDType)>);
    impl ModuleVisitor<B> for Compare<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            type I = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;
            let (want, got) = (self.0.remove::<I, D>(p.id).expect("master gradient"), self.1.remove::<I, D>(p.id).expect("replica gradient"));
            self.2.push((D, got.dtype().into()));
            let diff: f32 = (want - got.cast(FloatDType::F32)).abs().max().into_scalar();
            assert_eq!(diff, 0.0, "{:?} {:?}", p.id, p.shape());
        }
    }
    let mut cmp = Compare(&mut want, &mut got, vec![]);
    model.visit(&mut cmp);
    // The embedding (tied head) and every 1-D gain in f32; the layers' matrices in bf16.
    let dtypes = cmp.2;
    assert_eq!(dtypes[0], (2, FloatDType::F32));
    assert!(dtypes[1..].iter().all(|&(d, t)| t == if d == 2 { FloatDType::BF16 } else { FloatDType::F32 }), "{dtypes:?}");
}
