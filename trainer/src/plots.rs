//! PNG plots of a finished stage: `loss.png` (training and held-out loss per step) and
//! `lr.png`, or for RL `reward.png` and `success.png`, and `trainer eval`'s `pass_at_k.png`,
//! drawn with plotters. Text needs a
//! TrueType font: DejaVu Sans from the system or the one matplotlib bundles in the
//! sandbox's environment.
use crate::metrics::Metrics;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ".venv-sandbox/lib/python3*/site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf",
    concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv-sandbox/lib/python3*/site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf"),
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the first font found (once per process); false when there is none.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let found = FONTS.iter().find_map(|pat| {
            let path = if pat.contains('*') {
                let (dir, rest) = pat.split_once("python3*").unwrap();
                std::fs::read_dir(dir.trim_end_matches('/')).ok()?.flatten().map(|e| e.path().join(rest.trim_start_matches('/'))).find(|p| p.exists())?
            } else {
                pat.into()
            };
            std::fs::read(path).ok()
        });
        found.is_some_and(|bytes| plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice())).is_ok())
    })
}

/// Writes the plots; without any font it skips them with a note (the JSONL has the data).
pub fn write(out: &Path, m: &Metrics) -> Result<()> {
    if !font_ready() {
        eprintln!("plots skipped: no TrueType font found (install fonts-dejavu-core); metrics.jsonl has the data");
        return Ok(());
    }
    chart(&out.join("loss.png"), "loss per trained token", "step", &[("train", m.series("loss"), &BLUE), ("held-out", m.series("eval_loss"), &RED)])?;
    chart(&out.join("lr.png"), "learning rate", "step", &[("lr", m.series("lr"), &BLUE)])?;
    Ok(())
}

/// The RL stage's plots: `reward.png` (rollout reward and format share per step) and
/// `success.png` (held-out success rate).
pub fn write_rl(out: &Path, m: &Metrics) -> Result<()> {
    if !font_ready() {
        eprintln!("plots skipped: no TrueType font found (install fonts-dejavu-core); metrics.jsonl has the data");
        return Ok(());
    }
    chart(&out.join("reward.png"), "rollout reward", "step", &[("reward", m.series("reward"), &BLUE), ("format ok", m.series("format_ok"), &GREEN)])?;
    chart(&out.join("success.png"), "held-out success", "step", &[("success", m.series("eval_success"), &RED), ("well formed", m.series("eval_well_formed"), &BLUE)])?;
    Ok(())
}

/// `trainer eval --samples K --out DIR`: `pass_at_k.png`, pass@k against k.
pub fn write_eval(out: &Path, pass_at: &std::collections::BTreeMap<usize, f64>) -> Result<()> {
    if pass_at.is_empty() {
        return Ok(());
    }
    if !font_ready() {
        eprintln!("plot skipped: no TrueType font found (install fonts-dejavu-core); eval.json has the data");
        return Ok(());
    }
    let pts: Vec<(f64, f64)> = pass_at.iter().map(|(&k, &p)| (k as f64, p)).collect();
    chart(&out.join("pass_at_k.png"), "pass@k on the graded tasks", "k (samples drawn)", &[("pass@k", pts, &BLUE)])
}

fn chart(path: &Path, title: &str, x_desc: &str, series: &[(&str, Vec<(f64, f64)>, &RGBColor)]) -> Result<()> {
    let e = |e: &dyn std::fmt::Display| anyhow!("{}: {e}", path.display());
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    if pts.is_empty() {
        return Ok(());
    }
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.05).max(1e-12);
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
        .map_err(|x| e(&x))?;
    c.configure_mesh().x_desc(x_desc).label_style(("sans-serif", 14)).draw().map_err(|x| e(&x))?;
    for (name, pts, color) in series.iter().filter(|s| !s.1.is_empty()) {
        let color = **color;
        c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        if pts.len() < 40 {
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|x| e(&x))?;
        }
    }
    c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).label_font(("sans-serif", 14)).draw().map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
