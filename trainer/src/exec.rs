//! `trainer exec`: one cell through the same sandbox rollouts use. The cell runs in a
//! private copy of the workspace folder; files it creates or changes are copied back.
use anyhow::{bail, Context, Result};
use sandbox::{Limits, Mode, Sandbox, SandboxConfig};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Folder with the task's data files; the cell's cwd (a private copy of it).
    #[arg(long)]
    workspace: PathBuf,
    #[arg(long, default_value = "stateless")]
    mode: Mode,
    /// Wall-clock limit in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Memory the cell may allocate, in MB.
    #[arg(long, default_value_t = 4096)]
    memory: u64,
    /// Print {"status", "observation", "wall_ms", ...} instead of the observation.
    #[arg(long)]
    json: bool,
    /// The sandbox's Python (default: $DEEPANALYZE_SANDBOX_PYTHON, else .venv-sandbox/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    if !args.workspace.is_dir() {
        bail!("--workspace {}: not a folder", args.workspace.display());
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        bail!("--timeout must be a positive number of seconds, got {}", args.timeout);
    }
    let mut code = String::new();
    std::io::stdin().read_to_string(&mut code).context("reading the cell from stdin")?;
    let mut cfg = SandboxConfig { workers: 1, ..SandboxConfig::default() };
    if let Some(p) = args.python {
        cfg.python = p;
    }
    cfg.limits = Limits { timeout: Duration::from_secs_f64(args.timeout), memory_mb: args.memory, ..Limits::default() };
    let sandbox = Sandbox::new(cfg)?;
    let ws = sandbox.workspace(Some(&args.workspace))?;
    let ex = sandbox.run(&ws, &code, args.mode);
    for rel in &ex.files_changed {
        let dst = args.workspace.join(rel);
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
        std::fs::copy(ws.path().join(rel), &dst).with_context(|| format!("copying {} back", dst.display()))?;
    }
    if args.json {
        let mut v = serde_json::to_value(&ex)?;
        v["isolation"] = format!("{:?}", sandbox.isolation()).to_lowercase().into();
        println!("{v}");
    } else {
        print!("{}", ex.observation);
        if !ex.observation.ends_with('\n') && !ex.observation.is_empty() {
            println!();
        }
    }
    Ok(())
}
