//! Data parallel across machines: one process (rank) per machine, all running the same
//! command, joined over TCP. Ranks replicate what a machine shards: every rank keeps the
//! f32 master weights and AdamW state sharded among its own devices (`parallel`), and every
//! rank takes the same optimizer step, so no weights travel. What travels: each rank's
//! gradient sums of a step (its devices' micro-batches, added in micro-batch order) to the
//! rank owning each parameter, which adds them in rank order and sends the total back (two
//! gradients' worth of f32 a step, whatever the micro-batch count); RL's trajectories and
//! rewards; and small values (losses, flags). Every rank thus takes the same step; against
//! one machine, only the order of the additions across ranks differs.
//!
//! The launcher sets `WORLD_SIZE` (ranks), `RANK` (this one), `MASTER_ADDR` and
//! `MASTER_PORT` (where rank 0 listens; 29500 by default), as torchrun does; `trainer
//! submit --nodes N` writes them from Slurm's variables. Rank 0 alone writes the run
//! folder, which every rank reads (a shared filesystem).
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// This process's place in the run (none: a one-machine run).
pub fn get() -> Option<&'static Cluster> {
    CLUSTER.get().and_then(Option::as_ref)
}

/// Seconds this rank has spent sending to and waiting on the others so far (a step's
/// share of it is logged as `cluster_s`); none without a cluster.
pub fn seconds() -> Option<f64> {
    get().map(|c| c.busy.load(Ordering::Relaxed) as f64 * 1e-9)
}

/// Whether this process writes the run folder (rank 0, or no cluster).
pub fn primary() -> bool {
    get().is_none_or(|c| c.rank == 0)
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

/// Joins the run the environment describes (`WORLD_SIZE` > 1), waiting up to
/// `TRAINER_RENDEZVOUS_S` seconds (600) for every rank; without it, a one-machine run.
/// Later, a rank that hears nothing from another for `TRAINER_CLUSTER_TIMEOUT_S` seconds
/// (3600: long enough for rank 0 to write an 8B checkpoint) stops the run.
pub fn join_from_env() -> Result<()> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let world: usize = match var("WORLD_SIZE") {
        None => 1,
        Some(w) => w.parse().map_err(|_| anyhow!("WORLD_SIZE={w}: expected the number of ranks"))?,
    };
    if world <= 1 {
        let _ = CLUSTER.set(None);
        return Ok(());
    }
    let rank: usize = var("RANK").ok_or_else(|| anyhow!("WORLD_SIZE={world} but RANK is not set"))?.parse().map_err(|_| anyhow!("RANK: expected a number"))?;
    if rank >= world {
        bail!("RANK={rank}: expected 0..{world} (WORLD_SIZE={world})");
    }
    let host = var("MASTER_ADDR").ok_or_else(|| anyhow!("WORLD_SIZE={world} but MASTER_ADDR (rank 0's host) is not set"))?;
    let port: u16 = var("MASTER_PORT").unwrap_or_else(|| "29500".into()).parse().map_err(|_| anyhow!("MASTER_PORT: expected a port number"))?;
    let secs = |k: &str, default: u64| -> Result<Duration> {
        var(k).map_or(Ok(default), |s| s.parse().map_err(|_| anyhow!("{k}={s}: expected seconds"))).map(Duration::from_secs)
    };
    eprintln!("cluster: rank {rank} of {world} waiting for the others (rank 0 at {host}:{port})");
    // A lost or silent rank surfaces on whichever thread waits on it: the run stops with
    // the reason on one line, not a panic report.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| match info.payload().downcast_ref::<String>() {
        Some(m) if m.starts_with("cluster: ") => {
            eprintln!("error: {m}");
            std::process::exit(1);
        }
        _ => report(info),
    }));
    let mut c = Cluster::join(rank, world, &host, port, secs("TRAINER_RENDEZVOUS_S", 600)?)?;
    c.timeout = secs("TRAINER_CLUSTER_TIMEOUT_S", 3600)?;
    eprintln!("cluster: rank {rank} of {world} joined (rank 0 at {host}:{port})");
    CLUSTER.set(Some(c)).map_err(|_| anyhow!("joined a cluster twice"))?;
    // Every rank must run the same build (a machine with an older one would compute
    // other numbers, or speak another protocol).
    let exe = std::env::current_exe()?;
    let bytes = std::fs::read(&exe).with_context(|| exe.display().to_string())?;
    check_same("trainer binary (CRC-32C of its file)", &format!("{:08x}", crc32c::crc32c(&bytes)))
}

struct Peer {
    addr: SocketAddr,
    writer: Mutex<BufWriter<TcpStream>>,
    blobs: Mutex<Receiver<Vec<u8>>>,
}

pub struct Cluster {
    pub rank: usize,
    pub world: usize,
    /// By rank; none for this one.
    peers: Vec<Option<Peer>>,
    /// Nanoseconds spent sending and waiting to receive (all threads together).
    busy: AtomicU64,
    /// How long to wait for a rank before the run stops.
    timeout: Duration,
}

impl Cluster {
    /// Rank 0 listens at `port`; the others connect to it, say their rank and the port of
    /// their own listener, and get everyone's; then rank j connects to ranks 1..j.
    fn join(rank: usize, world: usize, host: &str, port: u16, wait: Duration) -> Result<Self> {
        let deadline = Instant::now() + wait;
        let mut links: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
        if rank == 0 {
            let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("rank 0: listening on port {port} (MASTER_PORT)"))?;
            let mut table = vec![String::new(); world];
            for _ in 1..world {
                let (mut s, from) = accept(&listener, deadline, &links)?;
                let hello = read_small(&mut s).with_context(|| format!("rank 0: greeting from {from}"))?;
                let (r, their_port) = parse_hello(&hello)?;
                if r == 0 || r >= world || links[r].is_some() {
                    bail!("rank 0: {from} says it is rank {r}; expected one of 1..{world}, each once (RANK)");
                }
                table[r] = SocketAddr::new(from.ip(), their_port).to_string();
                links[r] = Some(s);
            }
            let text = table.join("\n");
            for s in links.iter_mut().flatten() {
                write_frame(s, text.as_bytes())?;
            }
        } else {
            let listener = TcpListener::bind(("0.0.0.0", 0)).context("listening for the other ranks")?;
            let mut s = connect(&format!("{host}:{port}"), deadline).with_context(|| format!("rank {rank}: reaching rank 0 at {host}:{port} (MASTER_ADDR, MASTER_PORT)"))?;
            write_frame(&mut s, format!("{rank} {}", listener.local_addr()?.port()).as_bytes())?;
            let table = String::from_utf8(read_small(&mut s).context("rank 0's table of ranks")?)?;
            let table: Vec<&str> = table.split('\n').collect();
            links[0] = Some(s);
            for (r, addr) in table.iter().enumerate().take(rank).skip(1) {
                let mut s = connect(addr, deadline).with_context(|| format!("rank {rank}: reaching rank {r} at {addr}"))?;
                write_frame(&mut s, format!("{rank} 0").as_bytes())?;
                links[r] = Some(s);
            }
            for _ in rank + 1..world {
                let (mut s, from) = accept(&listener, deadline, &links)?;
                let (r, _) = parse_hello(&read_small(&mut s)?)?;
                if r <= rank || r >= world || links[r].is_some() {
                    bail!("rank {rank}: {from} says it is rank {r}; expected one of {}..{world}, each once", rank + 1);
                }
                links[r] = Some(s);
            }
        }
        let peers = links.into_iter().map(|l| l.map(Peer::start).transpose()).collect::<Result<_>>()?;
        Ok(Self { rank, world, peers, busy: AtomicU64::new(0), timeout: Duration::MAX })
    }

    fn peer(&self, r: usize) -> &Peer {
        self.peers[r].as_ref().expect("a peer, not this rank")
    }

    /// The other ranks.
    pub fn others(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.world).filter(move |&r| r != self.rank)
    }

    /// Sends `bytes` to rank `to` (in order with what was sent before).
    pub fn send_blob(&self, to: usize, bytes: &[u8]) {
        let (t0, p) = (Instant::now(), self.peer(to));
        let mut w = p.writer.lock().expect("no sender panicked holding it");
        if let Err(e) = write_frame(&mut *w, bytes) {
            panic!("cluster: rank {to} ({}) left the run (sending to it: {e:#}); the run stops (resume with --resume auto)", p.addr);
        }
        self.busy.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// The next bytes from rank `from`.
    pub fn recv_blob(&self, from: usize) -> Vec<u8> {
        let (t0, p) = (Instant::now(), self.peer(from));
        let b = match p.blobs.lock().expect("one reader").recv_timeout(self.timeout) {
            Ok(b) => b,
            Err(RecvTimeoutError::Disconnected) => left(from, p),
            Err(RecvTimeoutError::Timeout) => panic!(
                "cluster: no word from rank {from} ({}) in {} s (TRAINER_CLUSTER_TIMEOUT_S); the run stops (resume with --resume auto)",
                p.addr, self.timeout.as_secs()
            ),
        };
        self.busy.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        b
    }

    /// Every rank's `mine`, by rank.
    pub fn all_gather(&self, mine: Vec<u8>) -> Vec<Vec<u8>> {
        self.others().for_each(|r| self.send_blob(r, &mine));
        let mut all: Vec<Vec<u8>> = (0..self.world).map(|r| if r == self.rank { vec![] } else { self.recv_blob(r) }).collect();
        all[self.rank] = mine;
        all
    }
}

fn left(r: usize, p: &Peer) -> ! {
    panic!("cluster: rank {r} ({}) left the run (its connection closed); the run stops (resume with --resume auto)", p.addr)
}

impl Peer {
    /// A reader thread per peer queues what it sends, so a sender never waits on a
    /// receiver that is busy sending.
    fn start(s: TcpStream) -> Result<Self> {
        s.set_nodelay(true)?;
        s.set_read_timeout(None)?;
        let addr = s.peer_addr()?;
        let (tx, blobs) = channel();
        let mut r = BufReader::with_capacity(1 << 20, s.try_clone()?);
        std::thread::spawn(move || read_loop(&mut r, &tx));
        Ok(Self { addr, writer: Mutex::new(BufWriter::with_capacity(1 << 20, s)), blobs: Mutex::new(blobs) })
    }
}

/// Until the connection closes (which disconnects the channel, so a waiting receiver
/// learns the peer left).
fn read_loop(r: &mut impl Read, blobs: &Sender<Vec<u8>>) {
    while let Ok(b) = read_frame(r) {
        if blobs.send(b).is_err() {
            return;
        }
    }
}

/// A frame on a connection: its length (u64), then its bytes.
fn write_frame(w: &mut impl Write, bytes: &[u8]) -> Result<()> {
    w.write_all(&(bytes.len() as u64).to_le_bytes())?;
    w.write_all(bytes)?;
    w.flush()?;
    Ok(())
}

/// A rendezvous frame (a greeting, the table of ranks): at most 1 MB, so that a stray
/// connection to the port cannot make a rank allocate what its first bytes claim.
fn read_small(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let n = u64::from_le_bytes(head);
    if n > 1 << 20 {
        bail!("not a trainer rank (a {n}-byte greeting)");
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_frame(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let mut b = vec![0u8; u64::from_le_bytes(head) as usize];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn parse_hello(b: &[u8]) -> Result<(usize, u16)> {
    let text = String::from_utf8_lossy(b);
    let mut it = text.split(' ').map(str::parse::<usize>);
    match (it.next(), it.next()) {
        (Some(Ok(r)), Some(Ok(p))) if p <= u16::MAX as usize => Ok((r, p as u16)),
        _ => bail!("not a trainer rank's greeting: {text:?}"),
    }
}

fn connect(addr: &str, deadline: Instant) -> Result<TcpStream> {
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(anyhow!("{e} (gave up after TRAINER_RENDEZVOUS_S)")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn accept(l: &TcpListener, deadline: Instant, links: &[Option<TcpStream>]) -> Result<(TcpStream, SocketAddr)> {
    l.set_nonblocking(true)?;
    loop {
        match l.accept() {
            Ok((s, from)) => {
                s.set_nonblocking(false)?;
                // (A connection that never greets must not hold the rendezvous.)
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                return Ok((s, from));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let missing: Vec<usize> = links.iter().enumerate().skip(1).filter(|(_, l)| l.is_none()).map(|(r, _)| r).collect();
                bail!("waiting for ranks {missing:?} to connect at {}: {e} (TRAINER_RENDEZVOUS_S)", l.local_addr()?);
            }
        }
    }
}

/// Every rank must give the same `value` for `what` (the stage config, the step resumed
/// from); an error names the first rank that differs.
pub fn check_same(what: &str, value: &str) -> Result<()> {
    let Some(c) = get() else { return Ok(()) };
    let all = c.all_gather(value.as_bytes().to_vec());
    if let Some(r) = (1..c.world).find(|&r| all[r] != all[0]) {
        bail!("cluster: rank {r}'s {what} differs from rank 0's: {:?} vs {:?}", String::from_utf8_lossy(&all[r]), String::from_utf8_lossy(&all[0]));
    }
    Ok(())
}

/// Whether any rank says `flag` (SIGTERM seen by one rank stops all at the same step).
pub fn any(flag: bool) -> bool {
    match get() {
        None => flag,
        Some(c) => c.all_gather(vec![flag as u8]).iter().any(|b| b == &[1]),
    }
}

/// Waits until every rank is here.
pub fn barrier() {
    if let Some(c) = get() {
        c.all_gather(vec![]);
    }
}

/// `f` on rank 0 first, then (once it is done, whatever it gave) on the other ranks: for
/// what rank 0 writes and the others then read (a fresh model's init folder).
pub fn primary_first<T>(f: impl FnOnce() -> T) -> T {
    if !primary() {
        barrier();
    }
    let out = f();
    if primary() {
        barrier();
    }
    out
}

/// `f` on rank 0 only (what only it writes: the final model), the others waiting until it is
/// done; their result is Ok.
pub fn primary_only(f: impl FnOnce() -> Result<()>) -> Result<()> {
    let out = if primary() { f() } else { Ok(()) };
    barrier();
    out
}

/// `mine` sent to every other rank, and what each of them sent (by rank, this one left
/// out), as values of type `T` (what `mine` is, owned).
pub fn exchange<S: serde::Serialize + ?Sized, T: serde::de::DeserializeOwned>(c: &Cluster, mine: &S, what: &str) -> Vec<(usize, T)> {
    let bytes = bincode::serde::encode_to_vec(mine, bincode::config::standard()).expect("values encode");
    let all = c.all_gather(bytes).into_iter().enumerate().filter(|&(r, _)| r != c.rank);
    all.map(|(r, b)| (r, bincode::serde::decode_from_slice(&b, bincode::config::standard()).unwrap_or_else(|e| panic!("cluster: rank {r}'s {what}: {e}")).0))
        .collect()
}

/// The items `here` (index, value) of every rank, by index (0..len, each from one rank).
pub fn gather_indexed<R: serde::Serialize + serde::de::DeserializeOwned>(mut here: Vec<(usize, R)>, len: usize) -> Vec<R> {
    if let Some(c) = get() {
        for (_, theirs) in exchange::<_, Vec<(usize, R)>>(c, &here, "values") {
            here.extend(theirs);
        }
    }
    here.sort_by_key(|(i, _)| *i);
    assert!(here.len() == len && here.iter().enumerate().all(|(i, (j, _))| i == *j), "every item from exactly one rank");
    here.into_iter().map(|(_, r)| r).collect()
}
