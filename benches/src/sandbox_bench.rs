//! `sandbox-bench`: cells per second and p50/p99 latency of a small pandas cell (read a
//! csv, groupby, print) at several concurrencies, ours (warm zygote pool) against the
//! published approach (a fresh `python3` per cell, sandbox/reference/published_exec.py),
//! side by side in one run, with the ratio.
use anyhow::{Context, Result};
use clap::Parser;
use sandbox::{Mode, Sandbox, SandboxConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const CELL: &str = "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.groupby('region')['revenue'].agg(['sum', 'mean']).round(2))";

#[derive(Parser)]
struct Args {
    #[arg(long, value_delimiter = ',', default_value = "1,2,8,32")]
    concurrency: Vec<usize>,
    /// Cells per level for ours (the reference runs a quarter, at least 2 per thread).
    #[arg(long, default_value_t = 200)]
    cells: usize,
    /// The sandbox's Python (default: $DEEPANALYZE_SANDBOX_PYTHON or .venv-sandbox/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
}

struct Stats {
    per_sec: f64,
    p50: f64,
    p99: f64,
}

/// Runs `n` cells on `c` threads; returns throughput and latency percentiles (ms).
fn measure(n: usize, c: usize, cell: impl Fn() + Sync) -> Stats {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let mut lat: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..c)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = vec![];
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let t = Instant::now();
                        cell();
                        mine.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let total = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    Stats { per_sec: n as f64 / total, p50: q(0.5), p99: q(0.99) }
}

fn write_table(dir: &Path) -> Result<()> {
    let mut csv = String::from("region,revenue\n");
    for i in 0..2000 {
        csv += &format!("{},{}\n", ["north", "south", "east", "west"][i % 4], (i * 37) % 1000);
    }
    std::fs::write(dir.join("sales.csv"), csv)?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut cfg = SandboxConfig::default();
    if let Some(p) = args.python {
        cfg.python = p;
    }
    let python = std::path::absolute(&cfg.python)?;
    let reference = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sandbox/reference/published_exec.py");
    let data = tempfile::tempdir()?;
    write_table(data.path())?;
    let sandbox = Sandbox::new(cfg.clone())?;
    let ws = sandbox.workspace(Some(data.path()))?;
    let check = sandbox.run(&ws, CELL, Mode::Stateless);
    anyhow::ensure!(check.is_ok(), "the benchmark cell failed: {}", check.observation);
    // The cell's own work: the same code, warm, in one interpreter (median of 20).
    let own = Command::new(&python)
        .args(["-c", &format!("import os, time, statistics\nos.chdir({:?})\nimport pandas as pd\ncode = {:?}\nts = []\nfor _ in range(20):\n    t = time.perf_counter(); exec(code, {{}}); ts.append(time.perf_counter() - t)\nprint(statistics.median(ts) * 1000)", data.path(), CELL)])
        .stdout(Stdio::piped())
        .output()
        .context("timing the cell in-process")?;
    let own_ms: f64 = String::from_utf8_lossy(&own.stdout).trim().lines().last().unwrap_or("0").parse().unwrap_or(0.0);
    println!("machine: {} cores; pool: {} warm workers; isolation: {:?}; the cell alone (warm, in-process): {own_ms:.1} ms",
             std::thread::available_parallelism().map_or(0, |n| n.get()), cfg.workers, sandbox.isolation());
    println!("{:>5} {:>26} {:>26} {:>9} {:>16}", "conc", "ours cells/s  p50  p99 ms", "fresh python cells/s p50 p99", "ratio", "ours p50 - cell");
    for &c in &args.concurrency {
        let ours = measure(args.cells.max(2 * c), c, || {
            let ex = sandbox.run(&ws, CELL, Mode::Stateless);
            assert!(ex.is_ok());
        });
        let cold = measure((args.cells / 4).max(2 * c), c, || {
            let mut child = Command::new(&python)
                .arg(&reference)
                .current_dir(data.path())
                .env("MPLBACKEND", "Agg")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python");
            child.stdin.take().unwrap().write_all(CELL.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
        });
        println!("{c:>5} {:>12.1} {:>6.1} {:>6.1} {:>12.2} {:>6.0} {:>6.0} {:>8.1}x {:>13.1} ms",
                 ours.per_sec, ours.p50, ours.p99, cold.per_sec, cold.p50, cold.p99, ours.per_sec / cold.per_sec, ours.p50 - own_ms);
    }
    Ok(())
}
