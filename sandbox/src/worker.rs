//! One warm zygote process and its length-prefixed JSON protocol. A reader thread turns
//! its stdout into frames so a stuck zygote can be detected with a timeout and replaced.
use crate::{Error, Isolation, Result};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

pub(crate) struct Worker {
    child: Child,
    stdin: ChildStdin,
    frames: Receiver<Value>,
    /// Last line the zygote wrote to stderr, for diagnostics.
    pub(crate) last_stderr: std::sync::Arc<std::sync::Mutex<String>>,
    pub(crate) sessions: std::collections::HashSet<String>,
}

fn read_frame(r: &mut impl Read) -> Option<Value> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).ok()?;
    let mut buf = vec![0u8; u32::from_le_bytes(head) as usize];
    r.read_exact(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

impl Worker {
    /// Starts a zygote and waits until it has imported its libraries.
    pub(crate) fn spawn(iso: Isolation, python: &Path, script: &Path, root: &Path, cgroups: Option<&Path>) -> Result<(Worker, Value)> {
        let mut child = iso
            .command(python, script, root, cgroups)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Spawn(format!("{}: {e}", python.display())))?;
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        // Drain stderr (a full pipe would block the zygote), keeping the tail for errors.
        let tail = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let tail_w = tail.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if !line.trim().is_empty() {
                    *tail_w.lock().unwrap() = line;
                }
            }
        });
        let (tx, frames) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            while let Some(v) = read_frame(&mut stdout) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut w = Worker { child, stdin, frames, last_stderr: tail.clone(), sessions: Default::default() };
        match w.frames.recv_timeout(Duration::from_secs(120)) {
            Ok(hello) => Ok((w, hello)),
            Err(_) => {
                w.kill();
                std::thread::sleep(Duration::from_millis(50));
                let last = tail.lock().unwrap().clone();
                Err(Error::Spawn(format!("zygote exited before it was ready: {last}")))
            }
        }
    }

    /// Sends one request; None when the zygote died or did not answer within `guard`.
    pub(crate) fn call(&mut self, req: &Value, guard: Duration) -> Option<Value> {
        let data = serde_json::to_vec(req).ok()?;
        let mut frame = (data.len() as u32).to_le_bytes().to_vec();
        frame.extend(data);
        self.stdin.write_all(&frame).ok()?;
        self.stdin.flush().ok()?;
        match self.frames.recv_timeout(guard) {
            Ok(v) => Some(v),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// False once the zygote (or its bwrap/unshare wrapper) has exited.
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
