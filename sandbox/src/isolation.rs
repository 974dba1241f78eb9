//! How the zygotes are contained. Strongest first:
//! - `Bubblewrap`: read-only root, private /tmp, only the workspace root writable, no
//!   network, own pid/ipc/uts namespaces, dies with the trainer.
//! - `Unshare`: no network, own pid/ipc/uts namespaces; the filesystem is guarded only by
//!   the per-workspace uids.
//! - `Rlimits`: when not root; limits only, all workspaces share one uid.
//! Per-workspace uids (root only) keep workspaces apart in the first two.
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    Bubblewrap,
    Unshare,
    Rlimits,
}

impl Isolation {
    pub fn detect() -> Self {
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            return Isolation::Rlimits;
        }
        let works = |cmd: &mut Command| cmd.output().map(|o| o.status.success()).unwrap_or(false);
        if works(Command::new("bwrap").args(["--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "true"])) {
            Isolation::Bubblewrap
        } else if works(Command::new("unshare").args(["--net", "--pid", "--fork", "true"])) {
            Isolation::Unshare
        } else {
            Isolation::Rlimits
        }
    }

    /// Whether cells run under a uid of their own workspace.
    pub fn per_workspace_uid(self) -> bool {
        self != Isolation::Rlimits
    }

    pub fn describe(self) -> &'static str {
        match self {
            Isolation::Bubblewrap => "bubblewrap (read-only root, private /tmp, no network, pid namespace) + per-workspace uid + rlimits",
            Isolation::Unshare => "unshare (no network, pid namespace) + per-workspace uid + rlimits; root filesystem guarded by permissions only (install bubblewrap for more)",
            Isolation::Rlimits => "rlimits only (not root: workspaces share one uid, network open); run as root with bubblewrap for isolation",
        }
    }

    /// The command that starts one zygote running `script` with `python`; `cgroups` is
    /// the pool's memory cgroup, which the zygote must be able to write.
    pub fn command(self, python: &Path, script: &Path, workspace_root: &Path, cgroups: Option<&Path>) -> Command {
        let venv = venv_root(python);
        let mut cmd = match self {
            Isolation::Bubblewrap => {
                let mut c = Command::new("bwrap");
                c.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
                // No --die-with-parent: it fires when the spawning *thread* exits. A zygote
                // exits by itself when the pool's end of its stdin closes.
                c.args(["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]);
                let ws = workspace_root.to_string_lossy();
                c.args(["--bind", &ws, &ws]);
                if let Some(cg) = cgroups {
                    let cg = cg.to_string_lossy();
                    c.args(["--bind", &cg, &cg]);
                }
                // A venv under a private home (/root is 0700) is unreadable to the cells'
                // uids: show it at a neutral path instead.
                let python_in = match &venv {
                    Some(v) if Path::new("/mnt").is_dir() => {
                        c.args(["--tmpfs", "/mnt", "--ro-bind", &v.to_string_lossy(), "/mnt/venv"]);
                        PathBuf::from("/mnt/venv").join(python.strip_prefix(v).unwrap_or(Path::new("bin/python")))
                    }
                    _ => python.to_path_buf(),
                };
                c.arg("--").arg(python_in);
                c
            }
            Isolation::Unshare => {
                let mut c = Command::new("unshare");
                c.args(["--net", "--pid", "--fork", "--mount-proc", "--ipc", "--uts", "--kill-child"]);
                c.arg("--").arg(python);
                c
            }
            Isolation::Rlimits => Command::new(python),
        };
        cmd.arg("-u").arg(script);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", "/tmp")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("MPLBACKEND", "Agg")
            .env("MPLCONFIGDIR", workspace_root.join(".mplconfig"))
            // RLIMIT_AS breaks OpenBLAS thread start-up; one thread per cell is also fairer.
            .env("OPENBLAS_NUM_THREADS", "1")
            .env("OMP_NUM_THREADS", "1")
            .env("MKL_NUM_THREADS", "1");
        cmd
    }
}

/// The venv folder holding `python` (`<venv>/bin/python` with `<venv>/pyvenv.cfg`).
fn venv_root(python: &Path) -> Option<PathBuf> {
    let root = python.parent()?.parent()?;
    root.join("pyvenv.cfg").exists().then(|| root.to_path_buf())
}
