//! `trainer --stage sft-single|sft-multi|rl|all CONFIG.toml`: one stage from its config,
//! or the whole curriculum plan, each stage starting from the previous one's final
//! checkpoint and checked against its gate.
use anyhow::{bail, Result};
use curriculum::{Plan, StageKind};
use std::path::Path;
use trainer::rl;
use trainer::rl_config::RlConfig;
use trainer::sft::{self, Resume};
use trainer::stage_config::StageConfig;

pub fn run(kind: Option<StageKind>, config: &Path, overrides: &[String], resume: &Resume) -> Result<()> {
    trainer::interrupt::install();
    trainer::cluster::join_from_env()?;
    let Some(kind) = kind else { return run_plan(config, overrides, resume) };
    run_one(kind, config, overrides, None, resume).map(|_| ())
}

fn run_one(kind: StageKind, config: &Path, overrides: &[String], init: Option<&Path>, resume: &Resume) -> Result<curriculum::StageOutcome> {
    if kind == StageKind::Rl {
        let cfg = RlConfig::load(config, overrides)?;
        return rl::run(&cfg, config, init, resume);
    }
    let cfg = StageConfig::load(config, overrides)?;
    sft::run(kind, &cfg, config, init, resume)
}

/// `--stage all`: every stage of the plan in order (`--set` applies to each stage config).
fn run_plan(path: &Path, overrides: &[String], resume: &Resume) -> Result<()> {
    let plan = Plan::load(path, &[])?;
    let mut previous: Option<std::path::PathBuf> = None;
    for (i, st) in plan.stages.iter().enumerate() {
        let init = if st.from_previous { previous.as_deref() } else { None };
        eprintln!("curriculum: stage {}/{} {} ({})", i + 1, plan.stages.len(), st.kind.name(), st.config.display());
        let outcome = run_one(st.kind, &st.config, overrides, init, resume)?;
        if let Err(why) = st.gate.check(&outcome) {
            bail!("{}: stage {} ({}) did not pass its gate: {why}; the next stage does not start", path.display(), i + 1, st.kind.name());
        }
        previous = Some(outcome.final_dir);
    }
    eprintln!("curriculum: all {} stages done; final model in {}", plan.stages.len(), previous.unwrap().display());
    Ok(())
}
