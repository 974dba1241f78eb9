//! What a sandbox runs with: the Python to use, where workspaces live, the pool size and
//! the per-cell limits.
use std::path::PathBuf;
use std::time::Duration;

/// Environment variable naming the sandbox's Python (a venv made by scripts/setup-sandbox.sh).
pub const PYTHON_ENV: &str = "DEEPANALYZE_SANDBOX_PYTHON";

/// `stateless`: nothing survives between cells (the published behaviour). `session`: one
/// persistent namespace per workspace, like a Jupyter kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stateless,
    Session,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stateless" => Ok(Mode::Stateless),
            "session" => Ok(Mode::Session),
            _ => Err(format!("unknown mode `{s}` (stateless or session)")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock limit of one cell (the published RL environment used 10 s).
    pub timeout: Duration,
    /// Memory a cell may allocate beyond the warm interpreter (RLIMIT_AS; BLAS is single-threaded).
    pub memory_mb: u64,
    /// Processes of the workspace's uid at once (RLIMIT_NPROC: fork bombs stop here).
    pub max_processes: u64,
    pub max_open_files: u64,
    /// Largest file a cell may write.
    pub max_file_mb: u64,
    /// stdout + stderr kept; the rest is dropped and a marker says how much.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            memory_mb: 4096,
            max_processes: 64,
            max_open_files: 256,
            max_file_mb: 512,
            max_output_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Python interpreter (a venv's `bin/python`); default from $DEEPANALYZE_SANDBOX_PYTHON,
    /// else `.venv-sandbox/bin/python` under the current directory.
    pub python: PathBuf,
    /// Where workspaces are created (a fresh private folder under the system temp dir by default).
    pub workspace_root: Option<PathBuf>,
    /// Warm workers (each runs one cell at a time).
    pub workers: usize,
    pub limits: Limits,
    /// None = the strongest available.
    pub isolation: Option<crate::Isolation>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let python = std::env::var_os(PYTHON_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".venv-sandbox/bin/python"));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self { python, workspace_root: None, workers: cores * 2, limits: Limits::default(), isolation: None }
    }
}
