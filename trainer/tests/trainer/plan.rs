//! `trainer plan`'s arithmetic: parameter counts against the model module itself and
//! against Qwen3-0.6B's published size.
use crate::cli::root;
use burn::module::Module;
use model::{DefaultBackend as B, Qwen3, Qwen3Config};
use trainer::estimate::params;

#[test]
fn parameter_counts_match_the_module_and_qwen3_0_6b() {
    // Tied and untied, GQA 1/2/4, head_dim ≠ hidden/heads, attention bias.
    let mut dirs: Vec<_> = std::fs::read_dir(root().join("model/tests/fixtures/parity")).unwrap().flatten().map(|e| e.path()).collect();
    dirs.push(root().join("trainer/tests/fixtures/sft-parity/model"));
    for dir in dirs {
        let c = Qwen3Config::from_dir(&dir).unwrap();
        let module = Qwen3::<B>::init(&c, &Default::default()).num_params();
        assert_eq!(params(&c).total, module, "{}", dir.display());
    }
    // Qwen3-0.6B (model card: 0.6B parameters, 0.44B non-embedding): 28 layers of
    // q 1024x2048 + k, v 1024x1024 + o 2048x1024 + MLP 3x1024x3072 + norms (2x128 + 2x1024)
    // = 15,730,944; plus the final norm (1024) and the tied 151,936 x 1024 embedding.
    let c = Qwen3Config::from_file(&root().join("benches/shapes/qwen3-0.6b.json")).unwrap();
    let p = params(&c);
    assert_eq!((p.total, p.total - p.embedding), (596_049_920, 440_467_456));
}

#[test]
fn data_parallel_owners_split_the_parameters_evenly() {
    // ZeRO stage 1 gives each parameter to one device (its gradient sum and AdamW state
    // live there): every parameter once, and the largest-first greedy split keeps each
    // device within one parameter of an even share.
    let c = Qwen3Config::from_file(&root().join("configs/tiny-default.json")).unwrap();
    let model = Qwen3::<B>::init(&c, &Default::default());
    let sizes: std::collections::HashMap<_, _> = {
        struct Sizes(Vec<(burn::module::ParamId, usize)>);
        impl burn::module::ModuleVisitor<B> for Sizes {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<burn::tensor::Tensor<B, D>>) {
                self.0.push((p.id, p.shape().num_elements()));
            }
        }
        let mut s = Sizes(vec![]);
        model.visit(&mut s);
        s.0.into_iter().collect()
    };
    let total: usize = sizes.values().sum();
    let largest = *sizes.values().max().unwrap();
    for n in [1, 2, 3, 8] {
        let owners = trainer::parallel::owners(&model, n);
        let ids: std::collections::HashSet<_> = owners.iter().map(|(id, _, _)| *id).collect();
        assert_eq!((owners.len(), ids.len()), (sizes.len(), sizes.len()), "every parameter exactly once");
        let mut load = vec![0usize; n];
        for (id, _, k) in &owners {
            load[*k] += sizes[id];
        }
        assert_eq!(load.iter().sum::<usize>(), total);
        assert!(load.iter().all(|&l| l <= total / n + largest), "n = {n}: {load:?} of {total}");
        assert!(n == 1 || load.iter().all(|&l| l > 0), "n = {n}: a device owns nothing: {load:?}");
    }
}

#[test]
fn the_published_8b_recipe_plans_on_eight_gpus() {
    // configs/deepanalyze-8b with the base model's shape only (config.json, no weights):
    // the three stages load and validate, and the plan's numbers match hand arithmetic.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["plan", "configs/deepanalyze-8b/curriculum.toml", "--set", "model.init=configs/deepanalyze-8b/shape", "--no-measure", "--json"])
        .current_dir(root()) // the configs' paths are relative to the repository root
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stages = plan["stages"].as_array().unwrap();
    assert_eq!(stages.iter().map(|s| s["kind"].as_str().unwrap()).collect::<Vec<_>>(), ["sft-single", "sft-multi", "rl"]);
    // Qwen3-8B (model card: 8.2B parameters, 6.95B without the embeddings): 36 layers of
    // q 4096x4096 + k, v 4096x1024 + o 4096x4096 + MLP 3x4096x12288 + norms (2x4096 + 2x128)
    // = 192,946,432; the final norm; untied 151,936 x 4096 embedding and LM head.
    let p = &stages[0]["model"]["params"];
    assert_eq!(p["total"].as_u64(), Some(36 * 192_946_432 + 4096 + 2 * 151_936 * 4096));
    assert_eq!(p["total"].as_u64().unwrap() - p["embedding"].as_u64().unwrap(), 6_946_075_648);
    // 256 packed sequences a step among 8 GPUs: 32 forwards each; 8192 then 32768 tokens.
    for (s, seq) in [(&stages[0], 8192), (&stages[1], 32768)] {
        assert_eq!((s["devices"].as_u64(), s["forwards_per_step"].as_u64(), s["forwards_per_device"].as_u64()), (Some(8), Some(256), Some(32)));
        assert_eq!(s["batch_tokens"].as_u64(), Some(256 * seq));
    }
    // GRPO: 256 prompts x 5 samples; a GPU decodes 15 trajectories at once, each up to
    // 8000 prompt + 24768 response tokens, 36 layers x (K, V) x 8 heads x 128 in bf16.
    let rl = &stages[2];
    assert_eq!(rl["rollouts_per_step"], 1280);
    let part = |s: &serde_json::Value, name: &str| s["memory"]["parts"].as_array().unwrap().iter().find(|x| x["part"] == name).map(|x| x["bytes"].as_f64().unwrap());
    assert_eq!(part(rl, "KV cache of the rollouts"), Some(15.0 * 32768.0 * (36 * 2 * 8 * 128 * 2) as f64));
    // ZeRO stage 1: an eighth of the AdamW moments per GPU. The rollouts and the update do
    // not overlap, so the peak is below the parts' sum.
    assert_eq!(part(rl, "AdamW moments (f32, a 1/8 shard)"), Some(8.0 * p["total"].as_f64().unwrap() / 8.0));
    assert!(rl["memory"]["peak_bytes"].as_f64() < rl["memory"]["total_bytes"].as_f64());
    // With checkpointing a layer's gradients leave for their owners as its backward ends:
    // two layers' matrices in bf16 (192,937,984 a layer: the 192,946,432 above less its
    // norms) and the f32 rest (embedding, head, final norm, every layer's norms).
    let layer_matrices = 4096 * 4096 * 2 + 2 * 4096 * 1024 + 3 * 4096 * 12288;
    let rest = p["total"].as_f64().unwrap() - 36.0 * layer_matrices as f64;
    let in_flight = 2.0 * 2.0 * layer_matrices as f64 + 4.0 * rest;
    assert_eq!(part(&stages[1], "gradients in flight (two layers' bf16 layer matrices, the rest f32)"), Some(in_flight));
    // On 4 machines of 8 GPUs: 8 forwards a GPU, the same memory a GPU (each machine shards
    // among its own), and a machine sends its partial sums of the 3/4 of the parameters
    // others own plus its quarter's totals to 3 machines: 2 x 3/4 of the f32 gradients.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["plan", "configs/deepanalyze-8b/curriculum.toml", "--set", "model.init=configs/deepanalyze-8b/shape", "--no-measure", "--json", "--nodes", "4"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let four: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s0 = &four["stages"][0];
    assert_eq!((s0["nodes"].as_u64(), s0["forwards_per_device"].as_u64()), (Some(4), Some(8)));
    assert_eq!(s0["memory"]["peak_bytes"], stages[0]["memory"]["peak_bytes"]);
    assert_eq!(s0["exchanged_bytes_per_step"].as_f64(), Some(2.0 * 4.0 * p["total"].as_f64().unwrap() * 3.0 / 4.0));
    assert!(four["stages"][2]["exchanged_bytes_per_update"].as_f64().is_some() && stages[0]["exchanged_bytes_per_step"].is_null());
}
