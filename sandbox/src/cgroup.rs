//! Memory limits by cgroup (v1 memory controller) where the machine has one we may write:
//! one cgroup per workspace under one per pool, so a cell's resident memory is bounded
//! without RLIMIT_AS (which counts address space and upsets some libraries). A cell that
//! exceeds it is killed by the kernel and reported as MemoryExceeded.
use std::path::{Path, PathBuf};

const V1_MEMORY: &str = "/sys/fs/cgroup/memory";

pub(crate) struct MemoryCgroups {
    pub(crate) root: PathBuf,
}

impl MemoryCgroups {
    /// A cgroup for this pool, or None where there is no writable memory controller.
    pub(crate) fn create() -> Option<Self> {
        if !Path::new(V1_MEMORY).join("memory.limit_in_bytes").exists() {
            return None;
        }
        remove_stale();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = Path::new(V1_MEMORY).join(format!("deepanalyze-{}-{n}", std::process::id()));
        std::fs::create_dir(&root).ok()?;
        Some(Self { root })
    }

    /// The workspace's cgroup (created on first use).
    pub(crate) fn workspace(&self, uid: u32) -> Option<PathBuf> {
        let dir = self.root.join(format!("ws-{uid}"));
        (dir.exists() || std::fs::create_dir(&dir).is_ok()).then_some(dir)
    }
}

pub(crate) fn set_limit(dir: &Path, mb: u64) -> bool {
    std::fs::write(dir.join("memory.limit_in_bytes"), (mb << 20).to_string()).is_ok()
}

/// How often usage hit the limit so far.
pub(crate) fn failcnt(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("memory.failcnt")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Removes an empty cgroup (its processes must be gone; retried briefly while they exit).
pub(crate) fn remove(dir: &Path) {
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn remove_tree(root: &Path) {
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            remove(&e.path());
        }
    }
    remove(root);
}

/// Pools of processes that are gone (killed, or a static pool never dropped) leave their
/// empty cgroups behind: remove them.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(V1_MEMORY) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("deepanalyze-").and_then(|r| r.split('-').next()) else { continue };
        if !Path::new("/proc").join(pid).exists() {
            remove_tree(&e.path());
        }
    }
}

impl Drop for MemoryCgroups {
    fn drop(&mut self) {
        remove_tree(&self.root);
    }
}
