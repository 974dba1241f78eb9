//! `data-bench`: tokenize + loss-mask + pack throughput (tokens/s) on a shard of DeepAnalyze
//! trajectories, ours (rayon over all cores) against Python `tokenizers` (batch encoding,
//! its own thread pool) + pyarrow + jinja2 doing the same job (scripts/python_data.py), in
//! one run, with the ratio.
use anyhow::{ensure, Result};
use clap::Parser;
use datasets::{pack, read_all, Overlong, PackConfig, SampleTokenizer, ShardWriter, Tokenized, Trajectory};
use rayon::prelude::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    #[arg(long, default_value_t = 8192)]
    seq_len: usize,
    /// Folder with the Qwen3 tokenizer (scripts/setup-assets.sh).
    #[arg(long, default_value = "assets/qwen3-tokenizer")]
    tokenizer: PathBuf,
    #[arg(long, default_value = ".venv-tools/bin/python")]
    python: PathBuf,
}

fn trajectory(i: usize) -> Trajectory {
    let cols = ["region", "revenue", "units", "price", "month"];
    let table: String = (0..12 + i % 20).map(|r| format!("{r:>3}  north  {:>8.2}  {:>4}  {:>6.2}  2024-{:02}\n", r as f64 * 13.7, r * 3, 9.99 + r as f64, r % 12 + 1)).collect();
    let response = format!(
        "<Analyze>The task asks for revenue by region; first load sales_{i}.csv and check its columns.</Analyze>\n\
<Code>\n```python\nimport pandas as pd\ndf = pd.read_csv('sales_{i}.csv')\nprint(df.head({n}))\nprint(df.dtypes)\n```\n</Code>\n\
<Execute>\n{table}dtype: object\n</Execute>\n\
<Understand>The columns are {cols:?}; revenue is numeric, so a groupby works.</Understand>\n\
<Code>\n```python\nprint(df.groupby('region')['revenue'].sum().round(2))\n```\n</Code>\n\
<Execute>\nregion\nnorth    {s:.2}\nsouth    {t:.2}\n</Execute>\n\
<Answer>North has the higher revenue ({s:.2} against {t:.2}).</Answer>",
        n = 5 + i % 7, s = 1234.5 + i as f64, t = 987.25 + i as f64
    );
    Trajectory {
        id: format!("t{i}"),
        task_id: format!("task{i}"),
        system: None,
        prompt: format!("# Instruction\nWhich region has the higher revenue?\n\n# Data\nFile 1:\n{{\"name\": \"sales_{i}.csv\", \"size\": \"{}.0KB\"}}", 3 + i % 40),
        response,
        reward: None,
        source: "bench".into(),
        metadata: "{}".into(),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut w = ShardWriter::<Trajectory>::create(dir.path(), 64 << 20)?;
    for i in 0..args.samples {
        w.write(trajectory(i))?;
    }
    w.finish()?;
    let mut tok = model::Tokenizer::from_dir(&args.tokenizer)?;
    tok.add_deepanalyze_tags();
    let template = model::ChatTemplate::deepanalyze();
    let template_file = dir.path().join("deepanalyze.jinja");
    std::fs::write(&template_file, model::chat::DEEPANALYZE_TEMPLATE)?;

    let best = |f: &mut dyn FnMut() -> Result<(usize, usize, f64)>| -> Result<(usize, usize, f64, f64)> {
        let mut out = None;
        let mut best_s = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            let (tokens, seqs, eff) = f()?;
            let s = t.elapsed().as_secs_f64();
            if s < best_s {
                best_s = s;
                out = Some((tokens, seqs, eff));
            }
        }
        let (tokens, seqs, eff) = out.unwrap();
        Ok((tokens, seqs, eff, best_s))
    };
    let mut trained = 0;
    let (tokens, seqs, eff, secs) = best(&mut || {
        let rows: Vec<Trajectory> = read_all(dir.path())?;
        let st = SampleTokenizer { tokenizer: &tok, template: &template };
        let toks: Vec<Tokenized> = rows.par_iter().map(|t| st.trajectory(t)).collect::<datasets::Result<_>>()?;
        let (packed, r) = pack(&toks, &PackConfig { seq_len: args.seq_len, overlong: Overlong::Truncate, pad_id: 0 });
        trained = toks.iter().map(Tokenized::trained).sum();
        Ok((r.tokens, packed.len(), r.efficiency))
    })?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/python_data.py");
    let out = Command::new(&args.python)
        .arg(script)
        .args([dir.path().to_str().unwrap(), args.tokenizer.to_str().unwrap(), template_file.to_str().unwrap(), &args.seq_len.to_string()])
        .output()?;
    ensure!(out.status.success(), "python reference failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let (py_tokens, py_secs) = (r["tokens"].as_u64().unwrap() as usize, r["seconds"].as_f64().unwrap());
    ensure!(py_tokens == tokens, "the two did different work: {tokens} vs {py_tokens} tokens");
    ensure!(r["trained"].as_u64() == Some(trained as u64), "loss masks differ: {trained} vs {} trained tokens", r["trained"]);
    println!("machine: {} cores; {} trajectories, {tokens} tokens, packed into {seqs} x {} (efficiency {:.1}%)",
             rayon::current_num_threads(), args.samples, args.seq_len, eff * 100.0);
    println!("ours (rayon):                 {:>10.0} tokens/s  ({secs:.2} s)", tokens as f64 / secs);
    println!("python tokenizers + pyarrow:  {:>10.0} tokens/s  ({py_secs:.2} s)", tokens as f64 / py_secs);
    println!("ratio ours / python:          {:>10.2}x", py_secs / secs);
    Ok(())
}
