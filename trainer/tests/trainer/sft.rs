//! The SFT step against PyTorch (scripts/make_sft_parity.py): from the same transformers
//! checkpoint and the same packed batches, every step's loss, gradient norm and lr, and
//! the final parameters, with gradient accumulation on and off.
use crate::cli::root;
use datasets::PackedSeq;
use model::{Checkpoint, Compute, Precision};
use serde_json::Value;
use trainer::sft::TrainBackend;
use trainer::stage_config::{lr_at, OptimSpec};
use trainer::step::{nll_sum, Optim};

fn fixture() -> (std::path::PathBuf, Vec<Vec<PackedSeq>>, Value) {
    let dir = root().join("trainer/tests/fixtures/sft-parity");
    let read = |f: &str| serde_json::from_str::<Value>(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
    let v = |x: &Value| x.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect::<Vec<u64>>();
    let steps = read("batches.json")["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|seqs| {
            seqs.as_array()
                .unwrap()
                .iter()
                .map(|s| PackedSeq {
                    ids: v(&s["ids"]).iter().map(|&x| x as u32).collect(),
                    mask: v(&s["mask"]).iter().map(|&x| x as u8).collect(),
                    positions: v(&s["positions"]).iter().map(|&x| x as u32).collect(),
                    doc_lens: v(&s["doc_lens"]).iter().map(|&x| x as usize).collect(),
                })
                .collect()
        })
        .collect();
    let reference = read("reference.json");
    (dir, steps, reference)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn spec(r: &Value) -> OptimSpec {
    let o = &r["optim"];
    toml::from_str(&format!(
        "lr = {}\nbetas = [{}, {}]\neps = {}\nweight_decay = {}\nclip = {}\nwarmup = {}\nschedule = \"cosine\"",
        o["lr"], o["betas"][0], o["betas"][1], o["eps"], o["weight_decay"], o["clip"], o["warmup"]
    ))
    .unwrap()
}

#[test]
fn adamw_steps_match_pytorch_with_and_without_accumulation_checkpointing_and_data_parallel() {
    let (dir, steps, reference) = fixture();
    let spec = spec(&reference);
    // (micro-batch, checkpointing, data-parallel devices: on CPU, replicas sharing the one
    // device; with 3, one replica has no micro-batch of the 2)
    for (micro_batch, gradient_checkpointing, devices) in [(2, false, 1), (1, false, 1), (2, true, 1), (1, false, 2), (1, false, 3)] {
        let devices = model::devices(devices).unwrap();
        let device = devices[0].clone();
        let compute = Compute { gradient_checkpointing, ..Default::default() };
        let mut model = Checkpoint::<TrainBackend>::load(&dir.join("model"), &device).unwrap().model.with_stable_ids().with_compute(compute);
        let mut optim = Optim::<TrainBackend>::new(&spec);
        for (i, seqs) in steps.iter().enumerate() {
            let want = &reference["steps"][i];
            let lr = lr_at(&spec, i as u64, steps.len() as u64);
            assert!(rel(lr, want["lr"].as_f64().unwrap()) < 1e-12 || lr == 0.0 && want["lr"] == 0.0, "step {i}: lr {lr} vs {}", want["lr"]);
            let mbs: Vec<&[PackedSeq]> = seqs.chunks(micro_batch).collect();
            let (m, stats) = optim.step(model, &mbs, lr, &devices);
            model = m;
            let stats = stats.unwrap();
            assert_eq!(stats.trained_tokens as u64, want["trained_tokens"].as_u64().unwrap());
            let (loss, norm) = (want["loss"].as_f64().unwrap(), want["grad_norm"].as_f64().unwrap());
            assert!(rel(stats.loss, loss) < 1e-4, "micro_batch {micro_batch}, {} device(s), step {i}: loss {} vs PyTorch {loss}", devices.len(), stats.loss);
            assert!(rel(stats.grad_norm, norm) < 1e-4, "micro_batch {micro_batch}, {} device(s), step {i}: grad norm {} vs PyTorch {norm}", devices.len(), stats.grad_norm);
        }
        // Final weights: every parameter's norm, by checkpoint name.
        let out = tempfile::tempdir().unwrap();
        let ck = Checkpoint::<TrainBackend>::load(&dir.join("model"), &device).unwrap();
        model::checkpoint::save(&model, &ck.config, out.path(), 1 << 30).unwrap();
        let bytes = std::fs::read(out.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let norms = reference["final_param_norms"].as_object().unwrap();
        for (name, want) in norms {
            let name = if name == "lm_head.weight" { "model.embed_tokens.weight" } else { name.as_str() };
            let t = st.tensor(name).unwrap_or_else(|_| panic!("{name} missing"));
            let norm = t.data().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).map(|x| x * x).sum::<f64>().sqrt();
            assert!(rel(norm, want.as_f64().unwrap()) < 1e-4, "micro_batch {micro_batch}, {} device(s): {name} norm {norm} vs {want}", devices.len());
        }
    }
}

#[test]
fn a_bf16_step_tracks_torch_autocast_and_keeps_f32_master_weights() {
    // Reference: the first step's loss and gradient norm under torch.autocast(bfloat16)
    // (scripts/make_bf16_reference.py). Two correct bf16 implementations differ by about
    // what either differs from f32, so the bound is a multiple of autocast's own offset.
    let (dir, steps, reference) = fixture();
    let autocast: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("bf16.json")).unwrap()).unwrap();
    let (f32_loss, f32_norm) = (reference["steps"][0]["loss"].as_f64().unwrap(), reference["steps"][0]["grad_norm"].as_f64().unwrap());
    let (bf_loss, bf_norm) = (autocast["loss"].as_f64().unwrap(), autocast["grad_norm"].as_f64().unwrap());
    for gradient_checkpointing in [false, true] {
        let compute = Compute { precision: Precision::Bf16, gradient_checkpointing };
        let model = Checkpoint::<TrainBackend>::load(&dir.join("model"), &Default::default()).unwrap().model.with_stable_ids().with_compute(compute);
        let mut optim = Optim::<TrainBackend>::new(&spec(&reference));
        let (model, stats) = optim.step(model, &[&steps[0][..]], 1e-3, &[Default::default()]);
        let stats = stats.unwrap();
        eprintln!("checkpointing {gradient_checkpointing}: loss {} (autocast {bf_loss}, f32 {f32_loss}), grad norm {} (autocast {bf_norm}, f32 {f32_norm})", stats.loss, stats.grad_norm);
        assert!(stats.loss != f32_loss && stats.grad_norm != f32_norm, "bf16 compute gave f32 numbers");
        assert!(rel(stats.loss, bf_loss) < 3.0 * rel(bf_loss, f32_loss).max(1e-4), "loss {} vs autocast {bf_loss}", stats.loss);
        assert!(rel(stats.grad_norm, bf_norm) < 3.0 * rel(bf_norm, f32_norm).max(1e-4), "grad norm {} vs autocast {bf_norm}", stats.grad_norm);
        // The master weights stay f32 (the casts' backward returns f32 gradients).
        assert_eq!(model.layers[0].mlp.up_proj.weight.val().dtype(), burn::tensor::DType::F32);
        assert_eq!(model.norm.gamma.val().dtype(), burn::tensor::DType::F32);
    }
}

#[test]
fn a_packed_sequence_scores_like_its_documents_alone() {
    // The document mask and restarting positions: a packed row's loss equals the sum
    // of its documents' losses computed one by one without packing.
    let (dir, steps, _) = fixture();
    let model = Checkpoint::<model::DefaultBackend>::load(&dir.join("model"), &Default::default()).unwrap().model;
    let packed = &steps[0][0];
    let (sum, n) = nll_sum(&model, std::slice::from_ref(packed));
    let (mut alone, mut k, mut start) = (0.0, 0, 0);
    for &len in &packed.doc_lens {
        let doc = PackedSeq {
            ids: packed.ids[start..start + len].to_vec(),
            mask: packed.mask[start..start + len].to_vec(),
            positions: (0..len as u32).collect(),
            doc_lens: vec![len],
        };
        let (s, m) = nll_sum(&model, &[doc]);
        alone += s.into_scalar();
        k += m;
        start += len;
    }
    assert_eq!(n, k);
    let packed_sum = sum.into_scalar();
    assert!(rel(packed_sum as f64, alone as f64) < 1e-5, "packed {packed_sum} vs documents alone {alone}");
}

#[test]
fn rows_of_a_batch_score_as_they_do_alone_whatever_their_document_layouts() {
    // Rows with the same document lengths go through attention together, the others apart,
    // and come back in their order (model::qwen3's documents_attention): a batch of rows of
    // three layouts, one of them twice and apart, has the summed loss and gradients of its rows one by one.
    let (dir, steps, _) = fixture();
    let model = Checkpoint::<TrainBackend>::load(&dir.join("model"), &Default::default()).unwrap().model;
    let (a, b, c) = (steps[0][0].clone(), steps[0][1].clone(), steps[1][0].clone());
    let a2 = PackedSeq { ids: b.ids.clone(), ..a.clone() }; // a's layout, other tokens
    assert!(a.doc_lens != b.doc_lens && a.doc_lens != c.doc_lens && b.doc_lens != c.doc_lens);
    let id = model.layers[0].self_attn.q_proj.weight.id;
    let run = |rows: &[PackedSeq]| {
        let (loss, grads) = trainer::step::trained_loss_grads(&model, rows, 1.0, |lp, _| lp.sum().neg()).unwrap();
        (loss, grads.get::<model::DefaultBackend, 2>(id).unwrap().into_data().to_vec::<f32>().unwrap())
    };
    // The same layout apart (gathered, put back in order), then side by side (a view).
    for batch in [[a.clone(), b.clone(), c.clone(), a2.clone()], [a.clone(), a2.clone(), b.clone(), c.clone()]] {
        let (loss, grad) = run(&batch);
        let (mut loss_alone, mut grad_alone) = (0.0, vec![0f32; grad.len()]);
        for row in &batch {
            let (l, g) = run(std::slice::from_ref(row));
            loss_alone += l;
            grad_alone.iter_mut().zip(g).for_each(|(s, x)| *s += x);
        }
        assert!(rel(loss, loss_alone) < 1e-6, "batch {loss} vs rows alone {loss_alone}");
        let scale = grad_alone.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = grad.iter().zip(&grad_alone).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5 * scale, "q_proj gradient: batch vs rows alone max |Δ| {worst} (max {scale})");
    }
}

#[test]
fn owners_add_gradients_in_micro_batch_order_whatever_order_they_arrive_in() {
    // Each device emits its gradients the moment its backward has them; the owner must still
    // add them in micro-batch order, or the sums would not be the one-device step's. With
    // 1e8, -1e8 and 1 (f32) only that order gives 1: (1e8 + 1) rounds back to 1e8.
    // Micro-batch 2 emits first and 0 last; micro-batch 4 has nothing to train.
    use burn::optim::GradientsParams;
    type Inner = <TrainBackend as burn::tensor::backend::AutodiffBackend>::InnerBackend;
    let (dir, _, _) = fixture();
    let model = Checkpoint::<TrainBackend>::load(&dir.join("model"), &Default::default()).unwrap().model;
    let (norm, up) = (model.layers[0].input_layernorm.gamma.clone(), model.layers[1].mlp.up_proj.weight.clone());
    let values = [1e8f32, -1e8, 1.0, 5.0, 0.0];
    let delay_ms = [60, 30, 0, 0, 0];
    let devices = model::devices(3).unwrap();
    let parts: Vec<usize> = (0..5).collect();
    let (got, sums) = trainer::parallel::grads(&model, &devices, &parts, |k, _, &i, emit| {
        assert_eq!(k, i % 3, "device k takes parts k, k + n, ...");
        if i == 4 {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms[i]));
        // Two emits, as a checkpointed backward gives one layer at a time.
        let mut g = GradientsParams::new();
        g.register::<Inner, 2>(up.id, up.val().inner().ones_like().mul_scalar(values[i]));
        emit(g);
        let mut g = GradientsParams::new();
        g.register::<Inner, 1>(norm.id, norm.val().inner().ones_like().mul_scalar(values[i]));
        emit(g);
        Some(i)
    });
    assert_eq!(got, vec![Some(0), Some(1), Some(2), Some(3), None]);
    let mut sums = sums;
    let up_sum: Vec<f32> = sums.remove::<Inner, 2>(up.id).unwrap().into_data().to_vec().unwrap();
    let norm_sum: Vec<f32> = sums.remove::<Inner, 1>(norm.id).unwrap().into_data().to_vec().unwrap();
    for (name, sum) in [("up_proj", up_sum), ("input_layernorm", norm_sum)] {
        let wrong: Vec<f32> = sum.into_iter().filter(|&x| x != 6.0).collect();
        assert!(wrong.is_empty(), "{name}: sums {:?} (and {} more) instead of 1e8 - 1e8 + 1 + 5 = 6", &wrong[..1], wrong.len() - 1);
    }
}

#[test]
fn one_pass_adamw_gives_burns_adamw_bits_and_resumes_from_its_state() {
    // trainer::adamw::AdamW (one pass a parameter: on Flex a kernel on every core, in place
    // or on a copy when the weight is shared; the tensor-op default elsewhere, here through
    // Autodiff<Flex>) against burn's own AdamW from the same weights and gradients (scaled
    // first where ours applies a clip's coefficient): the same bits for the weight and both
    // moments, step after step, with and without weight decay (burn's operations in burn's
    // order). Then the optimizer state of a model trained with
    // burn's AdamW (what checkpoints of earlier builds hold) saved, loaded into ours and
    // stepped again: the same weights as burn's going on.
    use burn::optim::{AdamWConfig, AdamWState, SimpleOptimizer};
    use burn::prelude::*;
    fn steps<B: model::ModelBackend>(wd: f32) {
        let device = Default::default();
        B::seed(&device, 5);
        let burns = AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.95).with_epsilon(1e-8).with_weight_decay(wd).build();
        let ours = trainer::adamw::AdamW::new(0.9, 0.95, 1e-8, wd);
        let normal = |s: f64| Tensor::<B, 2>::random([37, 1000], burn::tensor::Distribution::Normal(0.0, s), &device);
        let (mut p_burn, mut p_ours) = (normal(1.0), None::<Tensor<B, 2>>);
        let (mut s_burn, mut s_ours): (Option<AdamWState<B, 2>>, Option<AdamWState<B, 2>>) = (None, None);
        let bits = |t: &Tensor<B, 2>| t.to_data().to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        for step in 0..4 {
            let g = normal(10f64.powi(-step));
            let lr = 1e-3 * (step + 1) as f64;
            // Steps 1 and 2 clipped: ours scales the gradient as it reads it, burn's AdamW
            // gets it scaled first (as the trainer did before the clip moved into AdamW).
            let clip = [1.0, 0.37, 0.0123, 1.0][step as usize];
            ours.scale_gradients(clip);
            // The first step from a weight burn's side holds too: our kernel's copy path.
            let p = p_ours.take().unwrap_or_else(|| p_burn.clone());
            let (p, s) = SimpleOptimizer::<B>::step(&ours, lr, p, g.clone(), s_ours.take());
            (p_ours, s_ours) = (Some(p), s);
            let g = if clip == 1.0 { g } else { g.mul_scalar(clip as f64) };
            let (p, s) = SimpleOptimizer::<B>::step(&burns, lr, p_burn, g, s_burn.take());
            (p_burn, s_burn) = (p, s);
            let (a, b) = (s_ours.as_ref().unwrap(), s_burn.as_ref().unwrap());
            assert_eq!(a.momentum.time, b.momentum.time);
            for (what, x, y) in [("weight", p_ours.as_ref().unwrap(), &p_burn), ("m", &a.momentum.moment_1, &b.momentum.moment_1), ("v", &a.momentum.moment_2, &b.momentum.moment_2)] {
                assert!(bits(x) == bits(y), "{}, weight decay {wd}, step {step}: {what} differs from burn's AdamW", std::any::type_name::<B>());
            }
        }
    }
    for wd in [0.0, 0.1] {
        steps::<burn::backend::Flex>(wd);
        steps::<TrainBackend>(wd);
    }

    use burn::optim::adaptor::OptimizerAdaptor;
    use burn::optim::{GradientsParams, Optimizer};
    use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
    use model::Qwen3;
    type Adaptor<O> = OptimizerAdaptor<O, Qwen3<TrainBackend>, TrainBackend>;
    let (dir, batches, _) = fixture();
    let device = Default::default();
    let model = Checkpoint::<TrainBackend>::load(&dir.join("model"), &device).unwrap().model.with_stable_ids();
    let grads = |m: &Qwen3<TrainBackend>, i: usize| -> GradientsParams { trainer::step::trained_loss_grads(m, &batches[i], 1.0, |lp, _| lp.sum().neg()).unwrap().1 };
    let mut burns: Adaptor<burn::optim::AdamW> = AdamWConfig::new().with_weight_decay(0.1).init();
    let model = burns.step(1e-3, model.clone(), grads(&model, 0));
    let saved = tempfile::tempdir().unwrap();
    let rec = BinFileRecorder::<FullPrecisionSettings>::new();
    rec.record(burns.to_record(), saved.path().join("optimizer")).unwrap();
    let ours: Adaptor<trainer::adamw::AdamW> = OptimizerAdaptor::from(trainer::adamw::AdamW::new(0.9, 0.999, 1e-5, 0.1));
    let mut ours = ours.load_record(rec.load(saved.path().join("optimizer"), &device).unwrap());
    let (by_burn, by_ours) = (burns.step(2e-3, model.clone(), grads(&model, 1)), ours.step(2e-3, model.clone(), grads(&model, 1)));
    let bits = |t: Tensor<TrainBackend, 2>| t.into_data().to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert!(bits(by_burn.embed_tokens.weight.val()) == bits(by_ours.embed_tokens.weight.val()), "embedding after a resumed step");
    for (x, y) in by_burn.layers.iter().zip(&by_ours.layers) {
        assert!(bits(x.mlp.down_proj.weight.val()) == bits(y.mlp.down_proj.weight.val()), "down_proj after a resumed step");
        assert!(bits(x.self_attn.q_proj.weight.val()) == bits(y.self_attn.q_proj.weight.val()), "q_proj after a resumed step");
    }
}
