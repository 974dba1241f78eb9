//! `synth-bench`: accepted trajectories per second with the expert solver on the default
//! tables, and the share of wall time spent inside the sandbox.
use anyhow::Result;
use clap::Parser;
use sandbox::{Sandbox, SandboxConfig};
use std::path::PathBuf;
use synth::{synthesize, SynthConfig};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "synth/tables")]
    tables: PathBuf,
    #[arg(long, default_value_t = 200)]
    tasks: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let out = tempfile::tempdir()?;
    let cfg = SynthConfig { tables: args.tables, out: out.path().join("s"), tasks: args.tasks, seed: 0, error_rate: 0.25, teacher: None, tokenizer: None, paraphrase: false };
    let r = synthesize(&cfg, &sandbox, &|_, _| {})?;
    println!("machine: {} cores; {} tasks at a time", std::thread::available_parallelism()?.get(), r.parallel_tasks);
    println!("{} tasks posed, {} accepted, {} rejected, {} without ground truth, in {:.1} s",
             r.posed, r.accepted, r.rejected.values().sum::<usize>(), r.ground_truth_failed, r.seconds);
    println!("accepted trajectories/s: {:.2}", r.accepted as f64 / r.seconds);
    println!("share of time in the sandbox: {:.0}% ({:.1} s of cells over {} parallel tasks x {:.1} s)",
             100.0 * r.sandbox_seconds / (r.seconds * r.parallel_tasks as f64), r.sandbox_seconds, r.parallel_tasks, r.seconds);
    Ok(())
}
