//! `trainer submit --slurm CONFIG.toml`: the run as a Slurm batch job. Writes an sbatch
//! script beside the run (resources from `trainer plan`'s estimate, `--requeue` for
//! preemption, SIGTERM 120 s before the time limit so the run stops at a step boundary
//! with a checkpoint) and submits it with `sbatch`; every start of the script resumes
//! (`--resume auto`), so a requeued or resubmitted job continues where it stopped.
use crate::plan;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// The config to run (a stage config or a curriculum).
    #[arg(long, value_name = "CONFIG.toml")]
    slurm: PathBuf,
    /// Stage to run: sft-single, sft-multi, rl or all (default: all for a curriculum, rl
    /// for an RL config, sft-single otherwise).
    #[arg(long)]
    stage: Option<String>,
    /// Override a config value: key=value (repeatable), passed on to the run.
    #[arg(long = "set")]
    set: Vec<String>,
    /// Machines: one rank each, joined over TCP (`trainer::cluster`).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// GPUs of the machine that train in data parallel (sets `compute.devices`; default:
    /// the config's).
    #[arg(long)]
    gpus_per_node: Option<usize>,
    /// CPUs for the job (the sandbox runs the model's cells on them).
    #[arg(long, default_value_t = 16)]
    cpus: usize,
    /// Wall-time limit (HH:MM:SS or D-HH:MM:SS; default: the partition's).
    #[arg(long)]
    time: Option<String>,
    #[arg(long)]
    partition: Option<String>,
    #[arg(long)]
    account: Option<String>,
    /// Write and print the script; do not call sbatch.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(mut a: Args) -> Result<()> {
    if a.nodes == 0 {
        bail!("--nodes 0: at least one machine");
    }
    if let Some(g) = a.gpus_per_node {
        a.set.push(format!("compute.devices={g}"));
    }
    let stages = plan::kinds(&a.slurm)?;
    let stage = match (&a.stage, stages.len()) {
        (Some(s), _) if ["sft-single", "sft-multi", "rl", "all"].contains(&s.as_str()) => s.clone(),
        (Some(s), _) => bail!("--stage {s}: expected sft-single, sft-multi, rl or all"),
        (None, 1) => stages[0].0.name().to_string(),
        (None, _) => "all".into(),
    };

    let plans = plan::stages(&a.slurm, &a.set, plan::Detail::Memory, a.nodes, |_, _, _| {})?;
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let params = plans.iter().map(|p| f(&p["model"]["params"]["total"])).fold(0.0, f64::max);
    let device_mem = plans.iter().map(|p| f(&p["memory"]["total_bytes"])).fold(0.0, f64::max);
    let gpus = plans.iter().map(|p| p["devices"].as_u64().unwrap_or(1)).max().unwrap_or(1);
    if gpus > 1 && !model::ON_GPU {
        bail!("compute.devices = {gpus}: this is a CPU build, which trains on the machine's one CPU; build with --features cuda for GPUs");
    }
    // Host memory: on a CPU build the training itself; on a GPU the checkpoint is read and
    // converted to f32 on the host first (4 bytes a parameter, twice while converting).
    let host = if model::ON_GPU { 8.0 * params } else { 1.25 * device_mem } + (4u64 << 30) as f64;
    let mem_gb = (host / (1u64 << 30) as f64).ceil() as u64;

    let cwd = std::env::current_dir()?;
    let config = std::fs::canonicalize(&a.slurm).with_context(|| a.slurm.display().to_string())?;
    let exe = std::env::current_exe()?;
    // The run folder of a stage config, or the folder holding a curriculum's first one.
    let out = PathBuf::from(plans[0]["out"].as_str().unwrap_or("."));
    let dir = cwd.join(if plans.len() > 1 { out.parent().map(Path::to_path_buf).unwrap_or_default() } else { out });
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let stem = a.slurm.file_stem().map_or("run".into(), |s| s.to_string_lossy().to_string());
    let script = dir.join(format!("{stem}.sbatch"));

    let mut s = String::from("#!/bin/bash\n");
    s += &format!("# Written by `trainer submit`: --stage {stage} {}.\n", config.display());
    s += "# Every start resumes (--resume auto). SIGTERM (preemption, scancel, and 120 s before\n";
    s += "# the time limit) makes the run save a checkpoint at its step boundary and stop;\n";
    s += "# a preempted job is requeued; after the time limit, submit this script again.\n";
    let mut sb = |k: &str, v: String| s += &format!("#SBATCH --{k}={v}\n");
    sb("job-name", stem.clone());
    sb("nodes", a.nodes.to_string());
    sb("ntasks-per-node", "1".into());
    sb("cpus-per-task", a.cpus.to_string());
    if model::ON_GPU {
        sb("gpus-per-node", gpus.to_string());
    }
    sb("mem", format!("{mem_gb}G"));
    if let Some(t) = &a.time {
        sb("time", t.clone());
    }
    if let Some(p) = &a.partition {
        sb("partition", p.clone());
    }
    if let Some(acc) = &a.account {
        sb("account", acc.clone());
    }
    sb("output", dir.join("slurm-%j.out").display().to_string());
    sb("open-mode", "append".into());
    sb("signal", "TERM@120".into());
    s += "#SBATCH --requeue\n\nset -euo pipefail\n";
    s += &format!("cd {}\n", quote(&cwd.display().to_string()));
    let sets: String = a.set.iter().map(|kv| format!(" --set {}", quote(kv))).collect();
    let run = format!("{} --stage {stage} {}{sets} --resume auto", quote(&exe.display().to_string()), quote(&config.display().to_string()));
    if a.nodes == 1 {
        s += &format!("srun --kill-on-bad-exit=1 {run}\n");
    } else {
        // One rank per machine, joined at the first machine (`trainer::cluster`).
        s += "export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n";
        s += "export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}\n";
        s += "export WORLD_SIZE=$SLURM_NNODES\n";
        s += &format!("srun --kill-on-bad-exit=1 --label bash -c 'RANK=$SLURM_PROCID exec \"$@\"' rank {run}\n");
    }
    std::fs::write(&script, &s).with_context(|| script.display().to_string())?;
    if a.dry_run {
        print!("{s}");
        eprintln!("submit: wrote {} (not submitted: --dry-run)", script.display());
        return Ok(());
    }
    let out = match Command::new("sbatch").arg(&script).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("sbatch: not found on PATH (not a Slurm login node?); the script is {}: submit it with sbatch there", script.display())
        }
        Err(e) => bail!("sbatch: {e}"),
    };
    if !out.status.success() {
        bail!("sbatch {}: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim().replace('\n', " "));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("submit: {} (log: {})", script.display(), dir.join("slurm-<job id>.out").display());
    Ok(())
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
