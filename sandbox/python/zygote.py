"""Sandbox zygote: imports the data-science stack once, then forks a fresh child per cell
(stateless) or keeps one child per session (a persistent namespace). Each child drops to
the workspace's own uid, takes its rlimits, runs the cell with cwd = the workspace, and
sends back the observation formatted exactly as the published DeepAnalyze environment
formats it. Speaks length-prefixed JSON on fds 0/1 with the Rust pool; never trusts the
cell: every child is swept (all processes of its uid killed) when its cell ends.
"""
import ctypes
import gc
import io
import json
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback

os.environ["MPLBACKEND"] = "Agg"
PRELOAD = ["numpy", "pandas", "scipy", "scipy.stats", "matplotlib", "matplotlib.pyplot", "sklearn",
           "sklearn.linear_model", "statsmodels.api", "seaborn", "openpyxl", "pyarrow", "sqlite3", "csv", "json"]
preloaded = []
for _name in PRELOAD:
    try:
        __import__(_name)
        preloaded.append(_name)
    except Exception:  # a missing optional package only costs that cell an import
        pass
try:
    import matplotlib
    matplotlib.use("Agg")
except Exception:
    pass

# First use of many pandas/numpy/matplotlib paths imports and initialises more: pay it
# once here, not in every forked cell.
WARMUP = """
import io, numpy as np, pandas as pd, matplotlib.pyplot as plt
df = pd.read_csv(io.StringIO("a,b,c,d\\n1,x,2.5,2020-01-01\\n2,y,3.5,2020-02-01\\n3,x,1.0,2020-03-01\\n"))
g = df.groupby('b')['a'].agg(['sum', 'mean', 'count']).round(2)
str(g); str(df.describe()); str(df.head()); df.info(buf=io.StringIO()); df.to_csv(io.StringIO())
df.sort_values('a').merge(df, on='b'); df.pivot_table(index='b', values='a'); df['b'].value_counts()
df.corr(numeric_only=True); pd.to_datetime(df['d']); df.isnull().sum(); df.dropna().fillna(0)
np.linalg.lstsq(np.eye(3), np.ones(3), rcond=None); np.percentile(np.arange(10), 50)
fig, ax = plt.subplots(); ax.plot([1, 2], [3, 4]); fig.savefig(io.BytesIO(), format='png'); plt.close('all')
"""
try:
    exec(WARMUP, {})
except Exception:
    pass

LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of cells come back to us to be reaped

PROTO_IN = os.fdopen(0, "rb", buffering=0)
PROTO_OUT = os.fdopen(os.dup(1), "wb", buffering=0)
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 1)  # nothing but protocol frames may reach the Rust side
BASE_VM = 0
with open("/proc/self/status") as _f:
    for _line in _f:
        if _line.startswith("VmSize:"):
            BASE_VM = int(_line.split()[1]) * 1024


def read_frame(f):
    head = b""
    while len(head) < 4:
        chunk = f.read(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = struct.unpack("<I", head)
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return json.loads(buf)


def write_frame(f, obj):
    data = json.dumps(obj).encode()
    f.write(struct.pack("<I", len(data)) + data)


# ------------------------------------------------------------------ inside a cell's child

class Capture(io.TextIOBase):
    """sys.stdout / sys.stderr of a cell: text kept up to a byte budget shared by both."""

    def __init__(self, budget):
        self.parts, self.budget = [], budget

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s.encode("utf-8", "surrogateescape"))
        left = self.budget["left"]
        if n <= left:
            self.parts.append(s)
        elif left > 0:
            self.parts.append(s.encode("utf-8", "surrogateescape")[:left].decode("utf-8", "ignore"))
        self.budget["left"] = left - n
        self.budget["omitted"] += max(0, n - max(left, 0))
        return len(s)

    def value(self):
        return "".join(self.parts)


def fresh_globals():
    return {"__name__": "__main__", "__builtins__": __builtins__}


def format_exception(e, code, stderr):
    """The published rule: first frame in <string> only, then `Type: message`, then stderr."""
    text = "Traceback (most recent call last):\n"
    lines = code.splitlines()
    for fr in traceback.extract_tb(e.__traceback__):
        if fr.filename == "<string>":
            src = lines[fr.lineno - 1].strip() if fr.lineno and 0 < fr.lineno <= len(lines) else ""
            text += f'  File "<string>", line {fr.lineno}, in <module>\n    {src}\n'
            break
    text += f"{type(e).__name__}: {e}"
    if stderr:
        text += "\n" + stderr
    return "[Error]:\n" + text.strip()


def run_cell(code, g, max_output):
    budget = {"left": max_output, "omitted": 0}
    out, err = Capture(budget), Capture(budget)
    sys.stdout, sys.stderr = out, err
    t0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        exec(compile(code, "<string>", "exec"), g)
        status, error_type = "ok", None
        observation = out.value() + err.value()
    except (SystemExit, KeyboardInterrupt) as e:
        status, error_type, observation = "exit", type(e).__name__, "[Error]\nUnknown execution error."
    except Exception as e:
        error_type = type(e).__name__
        status = "memory" if isinstance(e, MemoryError) else "error"
        observation = format_exception(e, code, err.value())
    except BaseException as e:
        status, error_type, observation = "exit", type(e).__name__, "[Error]\nUnknown execution error."
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    t1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (t1.ru_utime + t1.ru_stime - t0.ru_utime - t0.ru_stime) * 1000
    truncated = budget["omitted"] > 0
    if truncated:
        observation += f"\n... [output truncated: {budget['omitted']} more bytes]"
    return {"status": status, "error_type": error_type, "observation": observation,
            "truncated": truncated, "cpu_ms": cpu}


def become_cell(req, keep_fds):
    """In the forked child: own session, the workspace's uid, limits, cwd, quiet fds."""
    os.setsid()
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    cgroup = req.get("cgroup")
    if cgroup:  # join the workspace's memory cgroup while still root
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            cgroup = None
    uid = req.get("uid")
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    lim = req["limits"]
    mb = 1024 * 1024
    if not cgroup:  # no cgroup: bound the address space instead (BLAS is single-threaded)
        resource.setrlimit(resource.RLIMIT_AS, (BASE_VM + lim["memory_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["max_processes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["max_open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["max_file_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if req["mode"] == "stateless":
        cpu = int(req["timeout"]) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    os.chdir(req["cwd"])
    os.umask(0o077)
    os.environ["HOME"] = req["cwd"]
    os.dup2(_null, 0)
    os.dup2(_null, 1)
    os.dup2(_null, 2)
    for fd in [int(x) for x in os.listdir("/proc/self/fd")]:
        if fd > 2 and fd not in keep_fds:
            try:
                os.close(fd)
            except OSError:
                pass


# ------------------------------------------------------------------ the zygote side

def py_float(x):
    return repr(float(x))


def timeout_observation(t):
    return f"[Error]\nPython code execution timed out after {py_float(t)} seconds."


def sweep(uid, keep=(), dying=None):
    """Kill every process of this uid (grandchildren, daemons, fork bombs) but `keep`.
    `dying` is the cell's own process, already SIGKILLed: no reason to sweep for it alone."""
    if uid is None or os.getuid() != 0:
        return
    for _ in range(200):
        victims = [v for v in uid_processes(uid, keep) if v != dying]
        if not victims:
            return
        if keep:
            for v in victims:
                try:
                    os.kill(v, signal.SIGKILL)
                except OSError:
                    pass
        else:
            # kill(-1) as the uid itself: one syscall for all of them, and the kernel
            # aborts any fork that races with it, so a fork bomb cannot outrun it.
            pid = os.fork()
            if pid == 0:
                try:
                    os.setgid(uid)
                    os.setuid(uid)
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
        reap()
        time.sleep(0.0005)


def uid_processes(uid, keep):
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) in keep:
            continue
        try:
            with open(f"/proc/{p}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if fields.get("State", "").split()[:1] != ["Z"] and int(fields["Uid"].split()[0]) == uid:
                found.append(int(p))
        except (OSError, KeyError, ValueError):
            continue
    return found


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_frame(fd, deadline):
    """Read one length-prefixed frame from a pipe; None on EOF, 'timeout' past the deadline."""
    buf = b""
    need = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return "timeout"
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None
        buf += chunk
        if need is None and len(buf) >= 4:
            (need,) = struct.unpack("<I", buf[:4])
        if need is not None and len(buf) >= 4 + need:
            return json.loads(buf[4:4 + need])


def died(status):
    if os.WIFSIGNALED(status):
        return {"status": "killed", "signal": os.WTERMSIG(status), "error_type": None,
                "observation": "[Error]\nUnknown execution error.", "truncated": False}
    return {"status": "exit", "error_type": None, "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "observation": "[Error]\nUnknown execution error.", "truncated": False}


SPARE = None  # a child forked ahead of time: forking a big interpreter costs ~15 ms


def prefork():
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(req_w)
            os.close(res_r)
            req = read_frame(os.fdopen(req_r, "rb", buffering=0))
            if req is not None:
                become_cell(req, keep_fds={res_w})
                me = os.getpid()
                result = run_cell(req["code"], fresh_globals(), req["limits"]["max_output_bytes"])
                if os.getpid() != me:
                    os._exit(0)  # a process the cell forked: only the cell itself reports
                data = json.dumps(result).encode()
                view = memoryview(struct.pack("<I", len(data)) + data)
                while view:
                    view = view[os.write(res_w, view):]
        finally:
            os._exit(0)
    os.close(req_r)
    os.close(res_w)
    return pid, req_w, res_r


def stateless(req, reply):
    """Runs the cell in the spare child; replies as soon as every process of the cell is
    killed, then reaps and forks the next spare while the pool is busy elsewhere."""
    global SPARE
    pid, req_w, res_r = SPARE or prefork()
    SPARE = None
    try:
        write_frame(os.fdopen(req_w, "wb", buffering=0), req)
    except OSError:
        pass
    got = wait_frame(res_r, time.monotonic() + req["timeout"])
    os.close(res_r)
    try:
        os.killpg(pid, signal.SIGKILL)  # the cell is over, whatever it still runs
    except OSError:
        pass
    status = None
    if got is None or got == "timeout":
        _, status = os.waitpid(pid, 0)
    sweep(req.get("uid"), dying=pid)
    if got == "timeout":
        result = {"status": "timeout", "error_type": None, "observation": timeout_observation(req["timeout"]),
                  "truncated": False}
    elif got is None:
        result = died(status)
    else:
        result = got
    reply(result)
    if status is None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    reap()
    SPARE = prefork()


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


SESSIONS = {}  # id -> (pid, to_child_fd, from_child_fd, uid)


def session_child(req, cmd_r, res_w):
    become_cell(req, keep_fds={cmd_r, res_w})
    g = fresh_globals()
    me = os.getpid()
    f = os.fdopen(cmd_r, "rb", buffering=0)
    out = os.fdopen(res_w, "wb", buffering=0)
    while True:
        msg = read_frame(f)
        if msg is None:
            os._exit(0)
        result = run_cell(msg["code"], g, msg["max_output_bytes"])
        if os.getpid() != me:
            os._exit(0)  # a process the cell forked: only the session itself reports
        write_frame(out, result)


def end_session(sid):
    s = SESSIONS.pop(sid, None)
    if s is None:
        return
    pid, to_child, from_child, uid = s
    for fd in (to_child, from_child):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    sweep(uid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    reap()


def session(req):
    sid = req["session"]
    s = SESSIONS.get(sid)
    if s is not None and not _alive(s[0]):
        end_session(sid)
        s = None
    if s is None:
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(cmd_w)
            os.close(res_r)
            try:
                session_child(req, cmd_r, res_w)
            finally:
                os._exit(0)
        os.close(cmd_r)
        os.close(res_w)
        s = SESSIONS[sid] = (pid, cmd_w, res_r, req.get("uid"))
    pid, to_child, from_child, uid = s
    before = _child_cpu(pid)
    try:
        data = json.dumps({"code": req["code"], "max_output_bytes": req["limits"]["max_output_bytes"]}).encode()
        os.write(to_child, struct.pack("<I", len(data)) + data)
        got = wait_frame(from_child, time.monotonic() + req["timeout"])
    except OSError:
        got = None
    if got == "timeout":
        end_session(sid)
        return {"status": "timeout", "error_type": None, "observation": timeout_observation(req["timeout"]),
                "truncated": False, "session_ended": True}
    if got is None:
        status = 0
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        SESSIONS.pop(sid, None)
        end_session(sid)
        result = died(status)
        result["session_ended"] = True
        return result
    sweep(uid, keep={pid})  # strays a cell left behind; the session itself lives on
    got["cpu_ms"] = max(got.get("cpu_ms", 0.0), _child_cpu(pid) - before)
    return got


def _child_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def main():
    global SPARE
    gc.collect()
    gc.freeze()  # forked cells then do not dirty every object's page when they collect
    SPARE = prefork()
    write_frame(PROTO_OUT, {"ready": True, "preloaded": preloaded, "python": sys.version.split()[0],
                            "pid": os.getpid(), "uid": os.getuid()})
    while True:
        req = read_frame(PROTO_IN)
        if req is None:
            for sid in list(SESSIONS):
                end_session(sid)
            return
        t = time.monotonic()

        def reply(result):
            result["zygote_ms"] = (time.monotonic() - t) * 1000
            write_frame(PROTO_OUT, result)

        if req.get("op") == "end_session":
            end_session(req["session"])
            reply({"status": "ok", "observation": ""})
        elif req["mode"] == "session":
            reply(session(req))
        else:
            stateless(req, reply)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
