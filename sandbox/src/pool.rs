//! The pool: warm workers shared by many concurrent trajectories. A cell takes any idle
//! worker (stateless) or the worker holding its session; a worker that dies or hangs is
//! replaced and the cell reports `WorkerLost`, so no cell can take the trainer down.
use crate::execution::{Execution, Status};
use crate::worker::Worker;
use crate::workspace::{kill_uid, Source, Workspace};
use crate::{Error, Isolation, Mode, Result, SandboxConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const ZYGOTE: &str = include_str!("../python/zygote.py");

struct Inner {
    cfg: SandboxConfig,
    isolation: Isolation,
    python: PathBuf,
    root: PathBuf,
    owns_root: bool,
    script: PathBuf,
    workers: Vec<Mutex<Option<Worker>>>,
    /// Per worker: busy, and when it was last handed out (least recently used goes first:
    /// a zygote tidies up and forks its next child after replying).
    busy: Mutex<(Vec<bool>, Vec<u64>, u64)>,
    freed: Condvar,
    /// Declared last: removed after the workers are gone.
    cgroups: Option<crate::cgroup::MemoryCgroups>,
}

/// Workspace uids, shared by every pool of this process (two pools must never hand out
/// the same uid: dropping a workspace kills every process of its uid), in a range of its
/// own per process so two trainers on one machine do not collide either.
fn next_uid() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 2_000_000 + (std::process::id() % 4000) * 100_000;
    base + NEXT.fetch_add(1, Ordering::Relaxed) % 100_000
}

/// A pool of sandboxed Python workers. Cheap to clone; shared across threads.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl Sandbox {
    /// Starts the workers (in parallel) and says on stderr which isolation is active.
    pub fn new(cfg: SandboxConfig) -> Result<Self> {
        if !cfg.python.exists() {
            return Err(Error::PythonMissing { path: cfg.python.clone() });
        }
        let python = std::path::absolute(&cfg.python).map_err(|e| Error::Io { path: cfg.python.clone(), source: e })?;
        let isolation = cfg.isolation.unwrap_or_else(Isolation::detect);
        let (root, owns_root) = match &cfg.workspace_root {
            Some(r) => (r.clone(), false),
            None => {
                let dir = tempfile::Builder::new().prefix("deepanalyze-sandbox-").tempdir().map_err(|e| Error::Io {
                    path: std::env::temp_dir(),
                    source: e,
                })?;
                (dir.keep(), true)
            }
        };
        let io = |p: &Path, e| Error::Io { path: p.to_path_buf(), source: e };
        std::fs::create_dir_all(root.join(".mplconfig")).map_err(|e| io(&root, e))?;
        // Cells may pass through the root to their own workspace, but not list it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).map_err(|e| io(&root, e))?;
        std::fs::set_permissions(root.join(".mplconfig"), std::fs::Permissions::from_mode(0o755)).map_err(|e| io(&root, e))?;
        let script = root.join(".zygote.py");
        std::fs::write(&script, ZYGOTE).map_err(|e| io(&script, e))?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).map_err(|e| io(&script, e))?;
        let n = cfg.workers.max(1);
        let cgroups = if isolation.per_workspace_uid() { crate::cgroup::MemoryCgroups::create() } else { None };
        let inner = Inner {
            cgroups,
            workers: (0..n).map(|_| Mutex::new(None)).collect(),
            busy: Mutex::new((vec![false; n], vec![0; n], 0)),
            freed: Condvar::new(),
            cfg,
            isolation,
            python,
            root,
            owns_root,
            script,
        };
        let sandbox = Sandbox { inner: Arc::new(inner) };
        let sb = &sandbox;
        let hello = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n).map(|i| s.spawn(move || sb.start_worker(i))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect::<Result<Vec<Value>>>()
        })?;
        eprintln!(
            "sandbox: {} workers, python {} ({}), isolation: {}; memory limit by {}",
            n,
            hello[0]["python"].as_str().unwrap_or("?"),
            sandbox.inner.python.display(),
            isolation.describe(),
            if sandbox.inner.cgroups.is_some() { "cgroup (v1 memory controller)" } else { "RLIMIT_AS (no writable memory cgroup)" }
        );
        Ok(sandbox)
    }

    pub fn isolation(&self) -> Isolation {
        self.inner.isolation
    }

    pub fn workspace_root(&self) -> &Path {
        &self.inner.root
    }

    fn start_worker(&self, i: usize) -> Result<Value> {
        let cg = self.inner.cgroups.as_ref().map(|c| c.root.as_path());
        let (w, hello) = Worker::spawn(self.inner.isolation, &self.inner.python, &self.inner.script, &self.inner.root, cg)?;
        *self.inner.workers[i].lock().unwrap() = Some(w);
        Ok(hello)
    }

    /// A fresh private workspace, holding a copy of `from`'s files when given.
    pub fn workspace(&self, from: Option<&Path>) -> Result<Workspace> {
        self.new_workspace(from.map(Source::Folder))
    }

    /// A fresh private workspace holding copies of these files.
    pub fn workspace_with_files(&self, files: &[&Path]) -> Result<Workspace> {
        self.new_workspace(Some(Source::Files(files)))
    }

    fn new_workspace(&self, from: Option<Source>) -> Result<Workspace> {
        let uid = self.inner.isolation.per_workspace_uid().then(next_uid);
        let mut ws = Workspace::create(&self.inner.root, from, uid)?;
        ws.cgroup = uid.and_then(|u| self.inner.cgroups.as_ref()?.workspace(u));
        let me = self.clone();
        ws.on_drop = Some(Box::new(move |ws: &Workspace| me.end_session(ws)));
        Ok(ws)
    }

    fn acquire(&self, want: Option<usize>) -> usize {
        let mut state = self.inner.busy.lock().unwrap();
        loop {
            let (busy, used, clock) = &mut *state;
            let pick = match want {
                Some(i) => (!busy[i]).then_some(i),
                None => (0..busy.len()).filter(|&i| !busy[i]).min_by_key(|&i| used[i]),
            };
            if let Some(i) = pick {
                busy[i] = true;
                *clock += 1;
                used[i] = *clock;
                return i;
            }
            state = self.inner.freed.wait(state).unwrap();
        }
    }

    fn release(&self, i: usize) {
        self.inner.busy.lock().unwrap().0[i] = false;
        self.inner.freed.notify_all();
    }

    /// Runs one cell in `ws` with the sandbox's limits.
    pub fn run(&self, ws: &Workspace, code: &str, mode: Mode) -> Execution {
        self.run_with(ws, code, mode, &self.inner.cfg.limits)
    }

    /// Runs one cell with explicit limits (a per-task timeout, say).
    pub fn run_with(&self, ws: &Workspace, code: &str, mode: Mode, limits: &crate::Limits) -> Execution {
        let start = Instant::now();
        let before = ws.snapshot();
        let pinned = match mode {
            Mode::Session => *ws.session_worker.lock().unwrap(),
            Mode::Stateless => None,
        };
        let i = self.acquire(pinned);
        // The cgroup takes this call's limit; without one, RLIMIT_AS does (in the zygote).
        let cgroup = ws.cgroup.as_ref().filter(|cg| crate::cgroup::set_limit(cg, limits.memory_mb));
        let fails_before = cgroup.map(|cg| crate::cgroup::failcnt(cg));
        let req = json!({
            "cgroup": cgroup,
            "code": code,
            "cwd": ws.path,
            "uid": ws.uid,
            "mode": match mode { Mode::Stateless => "stateless", Mode::Session => "session" },
            "session": ws.id,
            "timeout": limits.timeout.as_secs_f64(),
            "limits": {
                "memory_mb": limits.memory_mb, "max_processes": limits.max_processes,
                "max_open_files": limits.max_open_files, "max_file_mb": limits.max_file_mb,
                "max_output_bytes": limits.max_output_bytes,
            },
        });
        let guard = limits.timeout + Duration::from_secs(10);
        let reply = {
            let mut slot = self.inner.workers[i].lock().unwrap();
            if !slot.as_mut().is_some_and(|w| w.is_alive()) {
                // Died while idle (OOM killer, a stray signal): replace it before use.
                *slot = None;
                drop(slot);
                let _ = self.start_worker(i);
                slot = self.inner.workers[i].lock().unwrap();
            }
            let reply = slot.as_mut().and_then(|w| w.call(&req, guard));
            if reply.is_none() {
                // Dead or stuck: replace it; its sessions are gone with it.
                if let Some(w) = slot.as_mut() {
                    w.kill(); // and let its stderr drain
                    std::thread::sleep(Duration::from_millis(50));
                    eprintln!("sandbox: worker {i} lost ({}); restarting it", w.last_stderr.lock().unwrap());
                }
                *slot = None;
                drop(slot);
                if let Some(uid) = ws.uid {
                    kill_uid(uid, None);
                }
                let _ = self.start_worker(i);
            } else if mode == Mode::Session {
                let ended = reply.as_ref().and_then(|r| r["session_ended"].as_bool()).unwrap_or(false);
                let w = slot.as_mut().unwrap();
                if ended {
                    w.sessions.remove(&ws.id);
                } else {
                    w.sessions.insert(ws.id.clone());
                }
            }
            reply
        };
        if mode == Mode::Session {
            let alive = reply.as_ref().is_some_and(|r| !r["session_ended"].as_bool().unwrap_or(false));
            *ws.session_worker.lock().unwrap() = alive.then_some(i);
        }
        self.release(i);
        let mut ex = parse_reply(reply);
        // Killed by the kernel after hitting the cgroup's limit: that is running out of memory.
        if let (Some(cg), Some(before), Status::Killed { signal: 9 }) = (cgroup, fails_before, &ex.status) {
            if crate::cgroup::failcnt(cg) > before {
                ex.status = Status::MemoryExceeded;
            }
        }
        ex.wall_ms = start.elapsed().as_secs_f64() * 1000.0;
        let after = ws.snapshot();
        ex.files_changed = after.into_iter().filter(|(p, meta)| before.get(p) != Some(meta)).map(|(p, _)| p).collect();
        ex
    }

    fn end_session(&self, ws: &Workspace) {
        let Some(i) = ws.session_worker.lock().unwrap().take() else { return };
        let i = self.acquire(Some(i));
        if let Some(w) = self.inner.workers[i].lock().unwrap().as_mut() {
            if w.sessions.remove(&ws.id) {
                let _ = w.call(&json!({"op": "end_session", "session": ws.id}), Duration::from_secs(10));
            }
        }
        self.release(i);
    }
}

fn parse_reply(reply: Option<Value>) -> Execution {
    let Some(r) = reply else {
        return Execution {
            status: Status::WorkerLost,
            observation: "[Error]\nUnknown execution error.".into(),
            truncated: false,
            wall_ms: 0.0,
            cpu_ms: 0.0,
            files_changed: vec![],
        };
    };
    let error_type = r["error_type"].as_str().unwrap_or("").to_string();
    let status = match r["status"].as_str().unwrap_or("") {
        "ok" => Status::Ok,
        "error" => Status::Error { error_type },
        "memory" => Status::MemoryExceeded,
        "timeout" => Status::Timeout,
        "killed" => Status::Killed { signal: r["signal"].as_i64().unwrap_or(0) as i32 },
        _ => Status::Exited,
    };
    Execution {
        status,
        observation: r["observation"].as_str().unwrap_or("").to_string(),
        truncated: r["truncated"].as_bool().unwrap_or(false),
        wall_ms: 0.0,
        cpu_ms: r["cpu_ms"].as_f64().unwrap_or(0.0),
        files_changed: vec![],
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for w in &self.workers {
            if let Some(mut w) = w.lock().unwrap().take() {
                w.kill();
            }
        }
        if self.owns_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
