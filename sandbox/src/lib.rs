//! The `sandbox` crate: runs `<Code>` cells for RL rollouts and synthesis.
//!
//! A [`Sandbox`] owns a pool of warm Python zygotes (numpy, pandas, matplotlib ... already
//! imported) inside an isolation layer (bubblewrap when installed, else namespaces via
//! `unshare`). A cell costs a `fork`, not an interpreter start. Each [`Workspace`] is a
//! private folder with its own uid, so cells of one task cannot see another's files, and
//! every process a cell leaves behind is killed when it ends. Observations are formatted
//! exactly as the published DeepAnalyze environment formats them.
mod cgroup;
mod config;
mod execution;
mod isolation;
mod pool;
mod worker;
mod workspace;

pub use config::{Limits, Mode, SandboxConfig, PYTHON_ENV};
pub use execution::{Execution, Status, NO_CODE_OBSERVATION};
pub use isolation::Isolation;
pub use pool::Sandbox;
pub use workspace::{FileInfo, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sandbox python `{path}` not found: run scripts/setup-sandbox.sh or set {PYTHON_ENV}")]
    PythonMissing { path: std::path::PathBuf },
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("sandbox worker failed to start: {0}")]
    Spawn(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The first ```python fenced block inside a `<Code>` span, as the published environment
/// extracts it (a bare ``` fence is accepted too). None when there is no code block.
pub fn extract_code(text: &str) -> Option<String> {
    let start = text.find("<Code>").map(|i| i + "<Code>".len()).unwrap_or(0);
    let end = text[start..].find("</Code>").map(|i| start + i).unwrap_or(text.len());
    let span = &text[start..end];
    let open = span.find("```python").map(|i| i + "```python".len()).or_else(|| span.find("```").map(|i| i + 3))?;
    let body = &span[open..];
    let close = body.find("```")?;
    Some(body[..close].trim_matches('\n').to_string())
}
