//! What a run records: one JSON object per line in `metrics.jsonl`, the same scalars as
//! TensorBoard event files (`events.out.tfevents.*`, written directly: TFRecord framing
//! with masked CRC-32C around `Event` protobufs), and PNG plots at the end.
use anyhow::{Context, Result};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Metrics {
    jsonl: File,
    events: File,
    path: PathBuf,
    /// Every row logged (also those before a resume), for the plots.
    pub rows: Vec<Value>,
}

impl Metrics {
    /// Opens `out/metrics.jsonl`, dropping rows after `resume_step` (a resumed run logs
    /// those steps again), and a fresh TensorBoard event file.
    pub fn open(out: &Path, resume_step: u64) -> Result<Self> {
        let path = out.join("metrics.jsonl");
        let rows: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["step"].as_u64().is_some_and(|s| s <= resume_step) && resume_step > 0)
            .collect();
        let mut jsonl = File::create(&path).with_context(|| path.display().to_string())?;
        for r in &rows {
            writeln!(jsonl, "{r}").with_context(|| path.display().to_string())?;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let ev = out.join(format!("events.out.tfevents.{}.trainer.{}", now.as_secs(), std::process::id()));
        let mut events = OpenOptions::new().create(true).append(true).open(&ev).with_context(|| ev.display().to_string())?;
        events.write_all(&record(&event(now.as_secs_f64(), 0, Some("brain.Event:2"), &[]))).with_context(|| ev.display().to_string())?;
        Ok(Self { jsonl, events, path, rows })
    }

    /// Logs one row: `step`, then scalar fields (non-numbers go to the JSONL only).
    pub fn log(&mut self, row: Value) -> Result<()> {
        writeln!(self.jsonl, "{row}").with_context(|| self.path.display().to_string())?;
        let step = row["step"].as_u64().unwrap_or(0);
        let scalars: Vec<(String, f32)> = row
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "step")
            .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x as f32)))
            .collect();
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        self.events.write_all(&record(&event(wall, step, None, &scalars))).context("TensorBoard event file")?;
        self.rows.push(row);
        Ok(())
    }

    /// (step, value) of a field over the run.
    pub fn series(&self, field: &str) -> Vec<(f64, f64)> {
        self.rows.iter().filter_map(|r| Some((r["step"].as_f64()?, r[field].as_f64()?))).collect()
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(tag: u8, b: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// `Event { wall_time = 1, step = 2, file_version = 3, summary = 5 { value = 1 { tag = 1, simple_value = 2 } } }`.
fn event(wall: f64, step: u64, file_version: Option<&str>, scalars: &[(String, f32)]) -> Vec<u8> {
    let mut e = vec![0x09];
    e.extend_from_slice(&wall.to_le_bytes());
    e.push(0x10);
    varint(step, &mut e);
    if let Some(v) = file_version {
        bytes_field(0x1a, v.as_bytes(), &mut e);
    }
    if !scalars.is_empty() {
        let mut summary = vec![];
        for (tag, x) in scalars {
            let mut value = vec![];
            bytes_field(0x0a, tag.as_bytes(), &mut value);
            value.push(0x15);
            value.extend_from_slice(&x.to_le_bytes());
            bytes_field(0x0a, &value, &mut summary);
        }
        bytes_field(0x2a, &summary, &mut e);
    }
    e
}

/// TFRecord framing: length, masked CRC of the length, data, masked CRC of the data.
fn record(data: &[u8]) -> Vec<u8> {
    let masked = |b: &[u8]| {
        let c = crc32c::crc32c(b);
        ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
    };
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked(data).to_le_bytes());
    out
}
