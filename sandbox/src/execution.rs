//! The outcome of one cell: the observation text the model sees inside `<Execute>`, and
//! the structured facts beside it that rewards and the Inspector use.
use serde::Serialize;
use std::path::PathBuf;

/// What the published environment answers when a `<Code>` block has no code in it.
pub const NO_CODE_OBSERVATION: &str = "[Error]:\nNo code is provided, so the execution results is empty.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// An exception; `error_type` is its class name.
    Error { error_type: String },
    Timeout,
    MemoryExceeded,
    /// SystemExit / KeyboardInterrupt, `os._exit`, or a process that ended without a result.
    Exited,
    /// Killed by a signal (a segfault, the kernel's OOM killer, ...).
    Killed { signal: i32 },
    /// The worker itself died or stopped answering; it has been replaced.
    WorkerLost,
}

#[derive(Debug, Clone)]
pub struct Execution {
    pub status: Status,
    /// Exactly what goes between `<Execute>\n` and `\n</Execute>`.
    pub observation: String,
    pub truncated: bool,
    pub wall_ms: f64,
    pub cpu_ms: f64,
    /// Files the cell created or changed, relative to the workspace.
    pub files_changed: Vec<PathBuf>,
}

impl Status {
    /// One word for logs and JSON: ok, error, timeout, memory_exceeded, exited, killed, worker_lost.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error { .. } => "error",
            Status::Timeout => "timeout",
            Status::MemoryExceeded => "memory_exceeded",
            Status::Exited => "exited",
            Status::Killed { .. } => "killed",
            Status::WorkerLost => "worker_lost",
        }
    }
}

impl Execution {
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// Flat JSON: `{"status": "error", "error_type": "KeyError", "observation": ..., "wall_ms": ...}`.
impl Serialize for Execution {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("status", self.status.name())?;
        match &self.status {
            Status::Error { error_type } => m.serialize_entry("error_type", error_type)?,
            Status::Killed { signal } => m.serialize_entry("signal", signal)?,
            _ => {}
        }
        m.serialize_entry("observation", &self.observation)?;
        m.serialize_entry("truncated", &self.truncated)?;
        m.serialize_entry("wall_ms", &self.wall_ms)?;
        m.serialize_entry("cpu_ms", &self.cpu_ms)?;
        m.serialize_entry("files_changed", &self.files_changed)?;
        m.end()
    }
}
