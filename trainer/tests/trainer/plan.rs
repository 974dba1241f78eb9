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
