//! A task's private folder: its data files copied in, owned by a uid of its own (mode
//! 0700) so other workspaces' cells cannot list, read or write it. Removed on drop unless
//! kept; every process of its uid is killed first.
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileInfo {
    pub path: PathBuf,
    pub bytes: u64,
}

/// What a new workspace starts with.
pub(crate) enum Source<'a> {
    Folder(&'a Path),
    Files(&'a [&'a Path]),
}

pub struct Workspace {
    pub(crate) path: PathBuf,
    /// The uid its cells run as (None when the sandbox cannot switch uids).
    pub(crate) uid: Option<u32>,
    /// Session mode: the worker holding this workspace's namespace.
    pub(crate) session_worker: Mutex<Option<usize>>,
    pub(crate) id: String,
    /// Its memory cgroup, when the machine has a writable memory controller.
    pub(crate) cgroup: Option<PathBuf>,
    keep: bool,
    pub(crate) on_drop: Option<Box<dyn Fn(&Workspace) + Send + Sync>>,
}

impl Workspace {
    pub(crate) fn create(root: &Path, from: Option<Source>, uid: Option<u32>) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("ws-").tempdir_in(root).map_err(|e| io(root, e))?;
        let path = dir.keep();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(|e| io(&path, e))?;
        match from {
            Some(Source::Folder(src)) => {
                if !src.is_dir() {
                    let _ = std::fs::remove_dir_all(&path);
                    return Err(Error::Invalid(format!("{}: not a folder of task files", src.display())));
                }
                copy_tree(src, &path)?;
            }
            Some(Source::Files(files)) => {
                for f in files {
                    let name = f.file_name().ok_or_else(|| Error::Invalid(format!("{}: not a file", f.display())))?;
                    std::fs::copy(f, path.join(name)).map_err(|e| io(f, e))?;
                }
            }
            None => {}
        }
        if let Some(uid) = uid {
            chown_tree(&path, uid)?;
        }
        let id = path.file_name().unwrap().to_string_lossy().into_owned();
        Ok(Self { path, uid, session_worker: Mutex::new(None), id, cgroup: None, keep: false, on_drop: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The uid its cells run as, when the sandbox switches uids.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// Keep the folder (and what the cells wrote) after the workspace is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Every regular file, relative to the workspace, with its size.
    pub fn files(&self) -> Vec<FileInfo> {
        self.snapshot().into_iter().map(|(path, (bytes, _))| FileInfo { path, bytes }).collect()
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.path.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let Ok(meta) = e.path().symlink_metadata() else { continue };
                if meta.is_dir() {
                    stack.push(e.path());
                } else if meta.is_file() {
                    let rel = e.path().strip_prefix(&self.path).unwrap().to_path_buf();
                    out.insert(rel, (meta.len(), meta.modified().ok()));
                }
            }
        }
        out
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f(self);
        }
        if let Some(uid) = self.uid {
            kill_uid(uid, None);
        }
        if let Some(cg) = &self.cgroup {
            crate::cgroup::remove(cg);
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        } else if self.uid.is_some() {
            let _ = chown_tree(&self.path, unsafe { libc::geteuid() });
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source }
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    for e in std::fs::read_dir(src).map_err(|e| io(src, e))? {
        let e = e.map_err(|e| io(src, e))?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let meta = from.metadata().map_err(|e| io(&from, e))?;
        if meta.is_dir() {
            std::fs::create_dir(&to).map_err(|e| io(&to, e))?;
            copy_tree(&from, &to)?;
        } else if meta.is_file() {
            std::fs::copy(&from, &to).map_err(|e| io(&from, e))?;
        }
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).map_err(|e| io(path, e))?;
    if path.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
        for e in std::fs::read_dir(path).map_err(|e| io(path, e))?.flatten() {
            chown_tree(&e.path(), uid)?;
        }
    }
    Ok(())
}

/// SIGKILL every process whose real uid is `uid` (but `keep`), until none is left.
pub(crate) fn kill_uid(uid: u32, keep: Option<i32>) {
    for _ in 0..100 {
        let mut found = false;
        let Ok(procs) = std::fs::read_dir("/proc") else { return };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
            if Some(pid) == keep {
                continue;
            }
            let Ok(status) = std::fs::read_to_string(p.path().join("status")) else { continue };
            let field = |k: &str| status.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1));
            let zombie = field("State:") == Some("Z"); // dead already, waiting to be reaped
            if !zombie && field("Uid:").and_then(|u| u.parse::<u32>().ok()) == Some(uid) {
                found = true;
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
