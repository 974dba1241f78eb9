//! The outcome of one cell: the observation text the model sees inside `<Execute>`, and
//! the structured facts beside it that rewards and the Inspector use.
use serde::Serialize;
use std::path::PathBuf;

/// What the published environment answers when a `<Code>` block has no code in it.
pub const NO_CODE_OBSERVATION: &str = "[Error]:\nNo code is provided, so the execution results is empty.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
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

#[derive(Debug, Clone, Serialize)]
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

impl Execution {
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}
