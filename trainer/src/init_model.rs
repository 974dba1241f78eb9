//! `trainer init-model`: a randomly initialised Qwen3 checkpoint in Hugging Face layout, from
//! a shape (a config.json-style file) and a tokenizer folder, with the DeepAnalyze tags
//! added. This is how the embedded tiny default starts, and what benchmarks run on.
use anyhow::{bail, Context, Result};
use model::{Checkpoint, DefaultBackend as B, Qwen3, Qwen3Config};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model shape: a config.json-style JSON file (e.g. configs/tiny-qwen3.json).
    #[arg(long)]
    config: PathBuf,
    /// Folder with tokenizer.json (and tokenizer_config.json); its vocabulary sets vocab_size.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Output folder (must not exist yet, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Seed for the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!("{}: exists and is not empty; refusing to overwrite", args.out.display());
    }
    let mut tokenizer = model::Tokenizer::from_dir(&args.tokenizer)?;
    tokenizer.add_deepanalyze_tags();
    let mut config = Qwen3Config::from_file(&args.config)?;
    config.vocab_size = config.vocab_size.max(tokenizer.len());
    config.set_special_token_ids(&tokenizer);
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), args.seed);
    let device = Default::default();
    let model = Qwen3::<B>::init(&config, &device);
    let ck = Checkpoint { dir: args.tokenizer.clone(), config, model, tokenizer: Some(tokenizer) };
    ck.save(&args.out, model::DEFAULT_MAX_SHARD_BYTES)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {} (vocab {}, DeepAnalyze tags {:?})", args.out.display(), ck.config.vocab_size,
              ck.tokenizer.as_ref().and_then(|t| t.deepanalyze_tag_ids()).unwrap_or_default());
    Ok(())
}
