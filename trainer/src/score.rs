//! `trainer score`: teacher-forced log-probability of each next token (f32 compute) and the
//! five largest logits at the last position, as one JSON object on stdout.
use anyhow::{bail, Context, Result};
use burn::prelude::*;
use model::{Checkpoint, DefaultBackend as B};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder (Hugging Face layout).
    #[arg(long)]
    model: PathBuf,
    /// Token ids, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "text", required_unless_present = "text")]
    ids: Vec<u32>,
    /// Text, encoded exactly as given with the checkpoint's tokenizer (no template, no special tokens).
    #[arg(long)]
    text: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let device = Default::default();
    let ck = Checkpoint::<B>::load(&args.model, &device)?;
    let ids = match &args.text {
        Some(text) => ck.tokenizer()?.encode(text)?,
        None => args.ids.clone(),
    };
    if ids.is_empty() {
        bail!("nothing to score: the input has no tokens");
    }
    let vocab = ck.config.vocab_size;
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        bail!("--ids: token id {bad} is outside the vocabulary of {} ({vocab} ids)", args.model.display());
    }
    let n = ids.len();
    let tokens = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, n]),
        &device,
    );
    let (logprobs, logits): (Vec<f32>, _) = if n > 1 {
        let (logp, logits) = ck.model.next_token_logprobs(tokens);
        (logp.into_data().to_vec().context("log-probs")?, logits)
    } else {
        (vec![], ck.model.forward(tokens))
    };
    let last: Vec<f32> = logits.slice([0..1, n - 1..n]).into_data().to_vec().context("logits")?;
    let mut order: Vec<usize> = (0..last.len()).collect();
    order.sort_by(|&a, &b| last[b].total_cmp(&last[a]).then(a.cmp(&b)));
    let top5: Vec<(usize, f32)> = order.iter().take(5).map(|&i| (i, last[i])).collect();
    let out = serde_json::json!({"ids": ids, "next_token_logprobs": logprobs, "last_top5": top5});
    println!("{out}");
    Ok(())
}
