//! The SFT stages as users run them: a tiny from-scratch model on a small shard of
//! arithmetic Q&A. SIGKILL + `--resume auto` reaches the same bytes as an uninterrupted
//! run; bad input fails with the file and field named and keeps what was written; the
//! curriculum chains stages and enforces gates; metrics are readable by TensorBoard.
use crate::cli::{err_line, root};
use datasets::{Message, SftSample, ShardWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Shard of `n` arithmetic samples (ability "math", difficulty by operand size).
fn write_data(dir: &Path, n: usize) {
    let mut w = ShardWriter::<SftSample>::create(dir, 1 << 20).unwrap();
    for i in 0..n {
        let (a, b) = (i * 7 % 53, i * 13 % 97);
        w.write(SftSample {
            id: format!("add-{i}"),
            ability: "math".into(),
            source: "test".into(),
            messages: vec![
                Message::new("user", format!("# Instruction\nWhat is {a} + {b}?")),
                Message::new("assistant", format!("<Analyze>\nAdd {a} and {b}.\n</Analyze>\n<Answer>\n@sum[{}]\n</Answer>", a + b)),
            ],
            difficulty: Some(((a + b) as f32 / 150.0).min(1.0)),
        })
        .unwrap();
    }
    w.finish().unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        write_data(&dir.join("data"), 80);
        std::fs::write(
            dir.join("arch.json"),
            r#"{"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "rms_norm_eps": 1e-6,
                "rope_theta": 10000.0, "tie_word_embeddings": true, "max_position_embeddings": 512}"#,
        )
        .unwrap();
        Fixture { _tmp: tmp, dir }
    }

    /// A stage config; `model` is the `[model]` body.
    fn config(&self, name: &str, model: &str, extra: &str) -> PathBuf {
        let d = &self.dir;
        let text = format!(
            "out = \"{out}\"\nseed = 3\n[model]\n{model}\n[data]\nheldout = 0.2\n[[data.sources]]\npath = \"{data}\"\n\
             [batch]\nseq_len = 128\nbatch_tokens = 256\nmicro_batch = 1\n\
             [optim]\nlr = 3e-3\nbetas = [0.9, 0.95]\nweight_decay = 0.1\nclip = 1.0\nwarmup = 0.1\n\
             [train]\nmax_steps = 24\n[checkpoint]\nevery = 2\nkeep_last = 2\n[eval]\nevery = 12\n{extra}",
            out = d.join(name).display(),
            data = d.join("data").display(),
        );
        let p = d.join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn scratch(&self) -> String {
        format!("arch = \"{}\"\ntokenizer_vocab = 400", self.dir.join("arch.json").display())
    }

    fn from_init(&self, init: &Path) -> String {
        format!("init = \"{}\"", init.display())
    }
}

/// The binary, run from the repository root (where the sandbox's .venv-sandbox is).
fn trainer_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.args(args).current_dir(root());
    c
}

fn stage(args: &[&str]) -> Output {
    trainer_cmd(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = stage(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "trainer {args:?} failed:\n{err}");
    err
}

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn sigkill_or_sigterm_at_a_random_step_then_resume_gives_the_same_weights() {
    let fx = Fixture::new();
    let a = fx.config("a", &fx.scratch(), "");
    ok(&["--stage", "sft-single", a.to_str().unwrap()]);
    let init = fx.dir.join("a/init");
    let b = fx.config("b", &fx.from_init(&init), "");
    // Kill somewhere after the first checkpoint, at a step that varies run to run.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    let kill_at = 3 + nanos % 17;
    let mut child = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["--stage", "sft-single", b.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics = fx.dir.join("b/metrics.jsonl");
    loop {
        let step = lines_if_any(&metrics).iter().filter_map(|r| r["step"].as_u64()).max().unwrap_or(0);
        if step >= kill_at {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before step {kill_at}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!fx.dir.join("b/final").exists(), "killed at step {kill_at}, yet the run finished");
    let log = ok(&["--stage", "sft-single", b.to_str().unwrap(), "--resume", "auto"]);
    assert!(log.contains("resumed at step"), "{log}");
    let weights = |run: &str| std::fs::read(fx.dir.join(run).join("final/model.safetensors")).unwrap();
    assert!(weights("a") == weights("b"), "killed at step {kill_at} and resumed: final weights differ from the uninterrupted run");
    // One row per step after the resume, none duplicated.
    let steps: Vec<u64> = lines(&metrics).iter().filter(|r| r.get("loss").is_some()).map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=24).collect::<Vec<_>>());
    let left: Vec<_> = std::fs::read_dir(fx.dir.join("b/checkpoints")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.len() <= 2, "keep_last = 2, yet after the kill at step {kill_at} and the resume: {left:?}");

    // SIGTERM (Slurm's preemption and time-limit signal), with no periodic checkpoints:
    // the run stops at the end of its step with a checkpoint there; nothing is lost.
    let c = fx.config("c", &fx.from_init(&init), "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["--stage", "sft-single", c.to_str().unwrap(), "--set", "checkpoint.every=0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = fx.dir.join("c/metrics.jsonl");
    while lines_if_any(&metrics).iter().filter_map(|r| r["step"].as_u64()).max().unwrap_or(0) < kill_at {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before step {kill_at}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or("");
    assert!(!out.status.success() && last.contains("stopped by SIGTERM after step") && last.contains("--resume auto"), "{err}");
    let stopped: u64 = last.split("after step ").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    assert!(stopped >= kill_at && stopped < 24, "stopped at {stopped}");
    let log = ok(&["--stage", "sft-single", c.to_str().unwrap(), "--set", "checkpoint.every=0"]);
    assert!(log.contains(&format!("resumed at step {stopped} ")), "{log}");
    assert!(weights("a") == weights("c"), "stopped by SIGTERM at step {stopped} and resumed: final weights differ");
    let steps: Vec<u64> = lines(&metrics).iter().filter(|r| r.get("loss").is_some()).map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=24).collect::<Vec<_>>());
}

#[test]
fn data_parallel_replicas_train_as_one_device_does() {
    // Two replicas (on a CPU build they share the one device) split each step's two
    // micro-batches and the held-out micro-batches; losses and final weights match the
    // one-device run up to float order.
    let fx = Fixture::new();
    let one = fx.config("one", &fx.scratch(), "");
    ok(&["--stage", "sft-single", one.to_str().unwrap(), "--set", "train.max_steps=6"]);
    let two = fx.config("two", &fx.from_init(&fx.dir.join("one/init")), "[compute]\ndevices = 2\n");
    let log = ok(&["--stage", "sft-single", two.to_str().unwrap(), "--set", "train.max_steps=6"]);
    assert!(log.contains("data parallel on 2 devices"), "{log}");
    let losses = |run: &str| -> Vec<f64> { lines(&fx.dir.join(run).join("metrics.jsonl")).iter().filter_map(|r| r["loss"].as_f64()).collect() };
    let (a, b) = (losses("one"), losses("two"));
    assert_eq!(a.len(), 6);
    assert_eq!(a, b, "the gradient sums are added in the one-device order: the same losses");
    // The held-out loss, shared out too: the same sum in the same order before the first step.
    let evals = |run: &str| -> Vec<f64> { lines(&fx.dir.join(run).join("metrics.jsonl")).iter().filter_map(|r| r["eval_loss"].as_f64()).collect() };
    let (ea, eb) = (evals("one"), evals("two"));
    assert_eq!((ea.len(), ea[0]), (2, eb[0]));
    assert!((ea[1] - eb[1]).abs() <= 1e-5 * ea[1], "{ea:?} vs {eb:?}");
    let floats = |run: &str| final_f32(&fx.dir.join(run));
    let (wa, wb) = (floats("one"), floats("two"));
    let diff = wa.iter().zip(&wb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(wa.len() == wb.len() && diff == 0.0, "final weights differ by up to {diff}");
    // bf16 (with gradient checkpointing): the replicas hold the layers' matrices in bf16,
    // so their gradients come out in bf16, the values an autocast step casts to f32 (the
    // one-device run): the same bits.
    let bf16 = "[compute]\nprecision = \"bf16\"\ngradient_checkpointing = true\n";
    let one16 = fx.config("one16", &fx.from_init(&fx.dir.join("one/init")), bf16);
    let two16 = fx.config("two16", &fx.from_init(&fx.dir.join("one/init")), &format!("{bf16}devices = 2\n"));
    for c in [&one16, &two16] {
        ok(&["--stage", "sft-single", c.to_str().unwrap(), "--set", "train.max_steps=4"]);
    }
    assert_eq!(losses("one16"), losses("two16"));
    assert!(floats("one16") == floats("two16"), "bf16 on two devices: final weights differ");
    // Resumed from its step-4 checkpoint (AdamW state sharded among the devices again by
    // owner): the uninterrupted run's final weights, to the bit.
    let again = fx.config("again", &fx.from_init(&fx.dir.join("one/init")), "[compute]\ndevices = 2\n");
    let ck = fx.dir.join("two/checkpoints/step-00000004");
    let log = ok(&["--stage", "sft-single", again.to_str().unwrap(), "--set", "train.max_steps=6", "--resume", ck.to_str().unwrap()]);
    assert!(log.contains("resumed at step 4"), "{log}");
    assert!(floats("again") == wb, "resumed on two devices: final weights differ");
    // Zero devices is an error naming the file and field.
    let e = err_line(&["--stage", "sft-single", one.to_str().unwrap(), "--set", "compute.devices=0"]);
    assert!(e.contains("one.toml") && e.contains("compute.devices"), "{e}");
}

/// `trainer args` as ranks 0..world of one run (rank 0 listening on a free local port), as
/// `trainer submit --nodes` starts them on separate machines; their stderr, by rank.
fn ranks(world: usize, args: &[&str]) -> Vec<(bool, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let children: Vec<_> = (0..world)
        .map(|r| {
            trainer_cmd(args)
                .envs([("WORLD_SIZE", world.to_string()), ("RANK", r.to_string()), ("MASTER_ADDR", "127.0.0.1".into()), ("MASTER_PORT", port.clone())])
                .env("TRAINER_RENDEZVOUS_S", "60")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).map(|o| (o.status.success(), String::from_utf8_lossy(&o.stderr).to_string())).collect()
}

#[test]
fn machines_joined_over_tcp_train_as_one_machine_does() {
    // Processes joined over TCP (here on one machine, sharing the run folder as machines
    // share a filesystem) split each step's micro-batches among all their devices; each
    // sums its own in micro-batch order, and the sums are added in rank order. With two
    // micro-batches a step on two ranks of one device that is the one-device sum itself, so
    // the same bits; with four on two ranks of two devices, (g0 + g1) + (g2 + g3) instead of
    // ((g0 + g1) + g2) + g3: the first step's loss exactly, then float-order differences.
    let fx = Fixture::new();
    let losses = |run: &str| -> Vec<f64> { lines(&fx.dir.join(run).join("metrics.jsonl")).iter().filter_map(|r| r["loss"].as_f64()).collect() };
    let floats = |run: &str| final_f32(&fx.dir.join(run));
    let run_ranks = |name: &str, model: &str, devices: usize, batch: usize| {
        let c = fx.config(name, model, &format!("[compute]\ndevices = {devices}\n"));
        let logs = ranks(2, &["--stage", "sft-single", c.to_str().unwrap(), "--set", "train.max_steps=4", "--set", &format!("batch.batch_tokens={batch}")]);
        for (r, (ok, log)) in logs.iter().enumerate() {
            assert!(ok, "{name}: rank {r} failed:\n{log}");
            assert!(log.contains(&format!("rank {r} of 2 joined")), "{log}");
        }
        assert!(fx.dir.join(name).join("checkpoints/step-00000004/state.json").exists());
    };
    let one = fx.config("one", &fx.scratch(), "");
    ok(&["--stage", "sft-single", one.to_str().unwrap(), "--set", "train.max_steps=4"]);
    run_ranks("ranks", &fx.scratch(), 1, 256); // (each rank builds the same model and tokenizer from scratch)
    assert_eq!(losses("one"), losses("ranks"));
    assert!(floats("one") == floats("ranks"), "two ranks, a micro-batch each: final weights differ from one device's");

    let init = fx.from_init(&fx.dir.join("one/init"));
    let one4 = fx.config("one4", &init, "");
    ok(&["--stage", "sft-single", one4.to_str().unwrap(), "--set", "train.max_steps=4", "--set", "batch.batch_tokens=512"]);
    run_ranks("ranks2x2", &init, 2, 512);
    let waits: Vec<f64> = lines(&fx.dir.join("ranks2x2/metrics.jsonl")).iter().filter_map(|r| r["cluster_s"].as_f64()).collect();
    assert!(waits.len() == 4 && waits.iter().all(|&w| w > 0.0), "cluster_s a step: {waits:?}");
    let (a, b) = (losses("one4"), losses("ranks2x2"));
    assert_eq!((a.len(), a[0]), (4, b[0]));
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs()), "{a:?} vs {b:?}");
    let (wa, wb) = (floats("one4"), floats("ranks2x2"));
    let diff = wa.iter().zip(&wb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(wa.len() == wb.len() && diff < 1e-4 && diff > 0.0, "two ranks of two devices: final weights differ by {diff}");
    // The same ranks and devices again: the same order, the same bits.
    run_ranks("again2x2", &init, 2, 512);
    assert!(floats("again2x2") == wb, "a rerun on two ranks of two devices differs");

    // A rank whose config differs is named; a rank that dies stops the others with a reason.
    let c = fx.config("differs", &fx.from_init(&fx.dir.join("one/init")), "");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let start = |r: usize, extra: &[&str]| {
        let mut args = vec!["--stage", "sft-single", c.to_str().unwrap()];
        args.extend(extra);
        trainer_cmd(&args).envs([("WORLD_SIZE", "2"), ("RANK", &r.to_string()), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", &port)])
            .env("TRAINER_CLUSTER_TIMEOUT_S", "3").stderr(std::process::Stdio::piped()).spawn().unwrap()
    };
    // (Polled: a tiny step takes milliseconds, so wait for any checkpoint, not a given one.)
    let checkpoints = |run: &str| -> Vec<PathBuf> {
        std::fs::read_dir(fx.dir.join(run).join("checkpoints")).map_or(vec![], |d| d.flatten().map(|e| e.path()).filter(|p| p.join("state.json").exists()).collect())
    };
    let at_a_checkpoint = |run: &str| {
        let t0 = std::time::Instant::now();
        while checkpoints(run).is_empty() {
            assert!(t0.elapsed().as_secs() < 120, "{run}: no checkpoint");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    let (a, b) = (start(0, &[]), start(1, &["--set", "seed=4"]));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(!a.status.success() && !b.status.success() && err.contains("rank 1's stage config differs from rank 0's"), "{err}");
    let long = ["--set", "train.max_steps=100000"];
    let (a, mut b) = (start(0, &long), start(1, &long));
    at_a_checkpoint("differs");
    b.kill().unwrap();
    b.wait().unwrap();
    let out = a.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("rank 1") && err.contains("left the run"), "{err}");
    assert!(!checkpoints("differs").is_empty(), "the checkpoints written before are kept");
    // A rank that hangs (stopped, its connection open) stops the others after the timeout.
    let hang = format!("out=\"{}\"", fx.dir.join("hangs").display());
    let args = ["--set", &hang, "--set", "checkpoint.every=1", "--set", "train.max_steps=100000"];
    let (a, mut b) = (start(0, &args), start(1, &args));
    at_a_checkpoint("hangs");
    let stop = |sig: &str| assert!(Command::new("kill").args([sig, &b.id().to_string()]).status().unwrap().success());
    stop("-STOP");
    let out = a.wait_with_output().unwrap();
    stop("-KILL");
    b.wait().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no word from rank 1") && err.contains("TRAINER_CLUSTER_TIMEOUT_S"), "{err}");
    // A rank running another build (here the same binary with a byte appended) is named.
    let other = fx.dir.join("trainer-other");
    let mut exe = std::fs::read(env!("CARGO_BIN_EXE_trainer")).unwrap();
    exe.push(0);
    std::fs::write(&other, exe).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let b = Command::new(&other).args(["--stage", "sft-single", c.to_str().unwrap()]).current_dir(root())
        .envs([("WORLD_SIZE", "2"), ("RANK", "1"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", &port)]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let a = start(0, &[]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(!a.status.success() && !b.status.success() && err.contains("rank 1's trainer binary"), "{err}");
    // A rank that never comes: rank 0 names it; rank 1 names where it looked for rank 0.
    let alone = |r: &str| {
        let o = trainer_cmd(&["--stage", "sft-single", c.to_str().unwrap()])
            .envs([("WORLD_SIZE", "2"), ("RANK", r), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", &port), ("TRAINER_RENDEZVOUS_S", "1")]).output().unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).trim().to_string()
    };
    let e = alone("0");
    assert!(e.contains("waiting for ranks [1]") && e.contains("TRAINER_RENDEZVOUS_S"), "{e}");
    let e = alone("1");
    assert!(e.contains(&format!("rank 1: reaching rank 0 at 127.0.0.1:{port}")) && e.contains("MASTER_ADDR"), "{e}");
}

/// The f32 weights of a run's final model (`run/final/model.safetensors`), by tensor name.
fn final_f32(run: &Path) -> Vec<f32> {
    let bytes = std::fs::read(run.join("final/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<&str> = st.names();
    names.sort();
    names.iter().flat_map(|n| st.tensor(n).unwrap().data().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>()).collect()
}

/// The JSON lines of `p` so far (none when it does not exist yet; a half-written last line is skipped).
fn lines_if_any(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn bad_input_names_the_file_and_field_and_keeps_earlier_checkpoints() {
    let fx = Fixture::new();
    let a = fx.config("a", &fx.scratch(), "");
    // (bf16 compute with gradient checkpointing, end to end through the CLI.)
    let run = ok(&["--stage", "sft-single", a.to_str().unwrap(), "--set", "train.max_steps=2", "--set", "compute.precision=\"bf16\"", "--set", "compute.gradient_checkpointing=true"]);
    assert!(run.contains("bf16") && run.contains("gradient checkpointing"), "{run}");
    let init = fx.dir.join("a/init");

    let typo = fx.config("typo", &fx.from_init(&init), "[optim2]\nlrr = 1\n");
    let e = err_line(&["--stage", "sft-single", typo.to_str().unwrap()]);
    assert!(e.contains("typo.toml") && e.contains("unknown field `optim2`") && e.contains("line 26"), "{e}");
    let e = err_line(&["--stage", "sft-single", a.to_str().unwrap(), "--set", "optim.lrr=1"]);
    assert!(e.contains("unknown field `lrr`"), "{e}");
    let e = err_line(&["--stage", "sft-single", a.to_str().unwrap(), "--set", "compute.precision=\"bf17\""]);
    assert!(e.contains("unknown variant `bf17`") && e.contains("precision"), "{e}");

    let missing = fx.config("missing", &fx.from_init(&init), "");
    std::fs::write(&missing, std::fs::read_to_string(&missing).unwrap().replace("/data\"", "/no-such-shards\"")).unwrap();
    let e = err_line(&["--stage", "sft-single", missing.to_str().unwrap()]);
    assert!(e.contains("no-such-shards/_manifest.json"), "{e}");

    // The NaN/inf guard: an absurd learning rate blows the weights up after the first
    // real update; the run stops naming the step, micro-batch and samples.
    let nan = fx.config("nan", &fx.from_init(&init), "");
    let o = stage(&["--stage", "sft-single", nan.to_str().unwrap(), "--set", "optim.lr=1e30", "--set", "checkpoint.every=0"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("step ") && (e.contains("loss is") || e.contains("gradient norm is")) && e.contains("data#"), "{e}");

    // A checkpoint whose config.json disagrees with its weights.
    let copy = |name: &str| {
        let d = fx.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in std::fs::read_dir(&init).unwrap().flatten() {
            std::fs::copy(f.path(), d.join(f.file_name())).unwrap();
        }
        d
    };
    let other = copy("other-shape");
    let cfg = std::fs::read_to_string(other.join("config.json")).unwrap().replace("\"hidden_size\": 32", "\"hidden_size\": 48");
    std::fs::write(other.join("config.json"), cfg).unwrap();
    let c = fx.config("c", &fx.from_init(&other), "");
    let e = err_line(&["--stage", "sft-single", c.to_str().unwrap()]);
    assert!(e.contains("model.safetensors") && e.contains("shape"), "{e}");

    // A tokenizer without the DeepAnalyze tags.
    let untagged = copy("untagged");
    let mut tj: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(untagged.join("tokenizer.json")).unwrap()).unwrap();
    tj["added_tokens"].as_array_mut().unwrap().retain(|t| !t["content"].as_str().unwrap().starts_with("<A"));
    std::fs::write(untagged.join("tokenizer.json"), tj.to_string()).unwrap();
    let d = fx.config("d", &fx.from_init(&untagged), "");
    let e = err_line(&["--stage", "sft-single", d.to_str().unwrap()]);
    assert!(e.contains("untagged/tokenizer.json") && e.contains("DeepAnalyze tags"), "{e}");

    // A full disk while checkpointing: the file size limit makes the next checkpoint's
    // weights fail to write; the error names the file, the earlier checkpoint stays
    // complete and loadable, and no partial folder is left.
    let full = fx.config("full", &fx.from_init(&init), "");
    ok(&["--stage", "sft-single", full.to_str().unwrap()]);
    let run = fx.dir.join("full");
    for p in ["final", "outcome.json", "checkpoints/step-00000024"] {
        let p = run.join(p);
        if p.is_dir() { std::fs::remove_dir_all(p).unwrap() } else { std::fs::remove_file(p).unwrap() }
    }
    let before = std::fs::read(run.join("checkpoints/step-00000022/model.safetensors")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    cmd.args(["--stage", "sft-single", full.to_str().unwrap()]);
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 40_000, rlim_max: 40_000 };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a write past the size limit should fail");
    assert!(e.contains("step-00000024") && e.contains("earlier checkpoints are untouched"), "{e}");
    assert_eq!(std::fs::read(run.join("checkpoints/step-00000022/model.safetensors")).unwrap(), before);
    let names: Vec<String> = std::fs::read_dir(run.join("checkpoints")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    assert!(names.iter().all(|n| !n.starts_with(".tmp")), "partial checkpoint left: {names:?}");
    let resumed = ok(&["--stage", "sft-single", full.to_str().unwrap()]);
    assert!(resumed.contains("resumed at step 22"), "{resumed}");
}

#[test]
fn the_curriculum_chains_stages_checks_gates_and_writes_tensorboard_and_plots() {
    let fx = Fixture::new();
    let s1 = fx.config("s1", &fx.scratch(), "");
    let s2 = fx.config("s2", &fx.from_init(Path::new("/ignored/by/the/plan")), "");
    let plan = fx.dir.join("plan.toml");
    std::fs::write(
        &plan,
        format!("[[stage]]\nkind = \"sft-single\"\nconfig = \"{}\"\nfrom_previous = false\ngate = {{ min_eval_drop = 0.05 }}\n\
                 [[stage]]\nkind = \"sft-multi\"\nconfig = \"{}\"\n", s1.display(), s2.display()),
    )
    .unwrap();
    ok(&["--stage", "all", plan.to_str().unwrap()]);
    let outcome = |run: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(fx.dir.join(run).join("outcome.json")).unwrap()).unwrap() };
    let (o1, o2) = (outcome("s1"), outcome("s2"));
    // Stage 2 starts from stage 1's final weights: same held-out set, same loss.
    let (end1, start2) = (o1["last_eval_loss"].as_f64().unwrap(), o2["first_eval_loss"].as_f64().unwrap());
    assert!((end1 - start2).abs() < 1e-5 * end1, "stage 2 starts at {start2}, stage 1 ended at {end1}");
    assert!(o2["last_eval_loss"].as_f64().unwrap() < start2, "held-out loss falls in stage 2");
    for png in ["s1/loss.png", "s2/lr.png"] {
        let bytes = std::fs::read(fx.dir.join(png)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png}");
    }
    // TensorBoard's own reader sees every logged loss.
    let events = std::fs::read_dir(fx.dir.join("s1")).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with("events.out.tfevents")).unwrap().path();
    let py = root().join(".venv-tools/bin/python");
    let out = Command::new(py)
        .args(["-c", "import sys, json\nfrom tensorboard.backend.event_processing.event_accumulator import EventAccumulator as E\n\
                      a = E(sys.argv[1]); a.Reload()\nprint(json.dumps([[e.step, e.value] for e in a.Scalars('loss')]))", events.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tb: Vec<(u64, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    let ours: Vec<(u64, f64)> = lines(&fx.dir.join("s1/metrics.jsonl")).iter().filter(|r| r.get("loss").is_some()).map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap())).collect();
    assert_eq!(tb.len(), ours.len());
    for (t, o) in tb.iter().zip(&ours) {
        assert!(t.0 == o.0 && (t.1 - o.1).abs() < 1e-5 * o.1.abs(), "{t:?} vs {o:?}");
    }
    // A gate the outcome cannot pass stops the plan before the next stage.
    let strict = fx.dir.join("strict.toml");
    let s3 = fx.config("s3", &fx.from_init(&fx.dir.join("s1/final")), "");
    std::fs::write(&strict, format!("[[stage]]\nkind = \"sft-single\"\nconfig = \"{}\"\nfrom_previous = false\ngate = {{ max_eval_loss = 0.001 }}\n\
                                     [[stage]]\nkind = \"sft-multi\"\nconfig = \"{}\"\n", s3.display(), s2.display())).unwrap();
    let o = stage(&["--stage", "all", strict.to_str().unwrap()]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let e = stderr.trim().lines().last().unwrap();
    assert!(e.contains("gate.max_eval_loss") && e.contains("did not pass"), "{e}");
}

/// RL tasks asking the fixture's sums, graded as `@sum[value]` (no files needed).
fn write_rl_tasks(dir: &Path, n: usize) {
    let mut w = ShardWriter::<datasets::RlTask>::create(dir, 1 << 20).unwrap();
    for i in 0..n {
        let (a, b) = (i * 7 % 53, i * 13 % 97);
        w.write(datasets::RlTask {
            id: format!("rl-{i}"),
            kind: "qa".into(),
            prompt: format!("# Instruction\nWhat is {a} + {b}?"),
            workspace: ".".into(),
            files: vec![],
            ground_truth: Some(format!("[[\"sum\", \"{}\"]]", a + b)),
            judge: None,
            source: "test".into(),
            metadata: "{}".into(),
        })
        .unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn rl_stage_updates_the_policy_and_resumes_to_the_same_weights_and_rollouts() {
    let fx = Fixture::new();
    let sft = fx.config("sft", &fx.scratch(), "");
    // Long enough that sampled answers are often well formed: rewards then vary in a group.
    ok(&["--stage", "sft-single", sft.to_str().unwrap(), "--set", "train.max_steps=240", "--set", "checkpoint.every=0"]);
    write_rl_tasks(&fx.dir.join("tasks"), 40);
    let rl = |name: &str| {
        let p = fx.dir.join(format!("{name}.toml"));
        std::fs::write(&p, format!(
            "out = \"{out}\"\nseed = 5\n[model]\ninit = \"{init}\"\n[data]\ntasks = [\"{tasks}\"]\nheldout = 0.2\n\
             [rollout]\ntasks_per_step = 4\ngroup_size = 4\nmax_turns = 2\nmax_new_tokens = 24\nmax_response_tokens = 48\n\
             [grpo]\nupdate_epochs = 2\nkl_coef = 0.05\n[optim]\nlr = 1e-3\nclip = 1.0\nschedule = \"constant\"\n[train]\nsteps = 3\n\
             [checkpoint]\nevery = 1\nkeep_last = 3\n[eval]\ntasks = 4\n\
             [compute]\nprecision = \"bf16\"\ngradient_checkpointing = true\n",
            out = fx.dir.join(name).display(), init = fx.dir.join("sft/final").display(), tasks = fx.dir.join("tasks").display())).unwrap();
        p
    };
    // (bf16 with gradient checkpointing and a KL term: rollouts from bf16 matrices, resumed to the bit.)
    let (a, b) = (rl("rl-a"), rl("rl-b"));
    // The plan bounds a step's rollouts: every row decoding until its response is full
    // (2 turns of 24 tokens, capped at 40 here), and one full-context prefill (turns after
    // the first encode only their observations), at the rates it measured.
    let o = stage(&["plan", a.to_str().unwrap(), "--json", "--set", "rollout.max_response_tokens=40"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ro = &plan["stages"][0]["rollout"];
    assert_eq!((ro["rows"].as_u64(), ro["decode_steps_at_most"].as_u64()), (Some(16), Some(40)), "{ro}");
    let (prefill, token) = (ro["prefill_s"].as_f64().unwrap(), ro["token_s"].as_f64().unwrap());
    assert!(prefill > 0.0 && token > 0.0, "{ro}");
    assert!((ro["s_at_most"].as_f64().unwrap() - (prefill + 40.0 * token)).abs() < 1e-9, "{ro}");
    // Bad input: a misspelled key (file, line, key), a preset that needs a judge, no tasks.
    let typo = fx.dir.join("typo.toml");
    std::fs::write(&typo, std::fs::read_to_string(&a).unwrap().replace("update_epochs", "update_epoch")).unwrap();
    let e = err_line(&["--stage", "rl", typo.to_str().unwrap()]);
    assert!(e.contains("typo.toml") && e.contains("update_epoch") && e.contains("line"), "{e}");
    let e = err_line(&["--stage", "rl", a.to_str().unwrap(), "--set", "reward.preset=\"published\""]);
    assert!(e.contains("[reward.judge]") && e.contains("qa"), "{e}");
    let e = err_line(&["--stage", "rl", a.to_str().unwrap(), "--set", "data.tasks=[\"/nonexistent/tasks\"]"]);
    assert!(e.contains("/nonexistent/tasks"), "{e}");
    // The plan of this stage: its parts (bf16 rollout copy, KL reference, KV cache) and
    // the prompts encoded as the rollouts will (32 of the 40 tasks are not held out).
    let o = stage(&["plan", a.to_str().unwrap(), "--json", "--no-measure"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &plan["stages"][0];
    let parts: Vec<&str> = p["memory"]["parts"].as_array().unwrap().iter().map(|x| x["part"].as_str().unwrap()).collect();
    for part in ["rollout copy (bf16 matrices)", "KL reference", "KV cache of the rollouts", "layer inputs (checkpointing)"] {
        assert!(parts.contains(&part), "{part} missing: {parts:?}");
    }
    let held = (0..40).filter(|i| curriculum::heldout(&format!("rl-{i}"), 0.2)).count();
    assert_eq!(p["prompt_tokens"]["tasks"].as_u64().unwrap() as usize, 40 - held);
    assert!(p["prompt_tokens"]["max"].as_u64().unwrap() > 10, "{p}");
    // rollout.max_prompt_tokens leaves the longer prompts out (the plan counts them), and
    // rollout.max_rows decodes a step's 4 tasks in waves of one group.
    let longest = p["prompt_tokens"]["max"].as_u64().unwrap();
    let o = stage(&["plan", a.to_str().unwrap(), "--json", "--set", &format!("rollout.max_prompt_tokens={}", longest - 1), "--set", "rollout.max_rows=5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cut: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cut = &cut["stages"][0];
    let left_out = cut["prompt_tokens"]["left_out"].as_u64().unwrap();
    assert!(left_out >= 1 && cut["prompt_tokens"]["tasks"].as_u64().unwrap() + left_out == (40 - held) as u64, "{cut}");
    assert!(cut["prompt_tokens"]["max"].as_u64().unwrap() < longest, "{cut}");
    assert_eq!((cut["rollout"]["rows"].as_u64(), cut["rollout"]["waves"].as_u64()), (Some(4), Some(4)), "{cut}");
    let e = err_line(&["--stage", "rl", a.to_str().unwrap(), "--set", "rollout.max_prompt_tokens=1"]);
    assert!(e.contains("a.toml") && e.contains("rollout.max_prompt_tokens"), "{e}");
    let e = err_line(&["--stage", "rl", a.to_str().unwrap(), "--set", "rollout.max_rows=0"]);
    assert!(e.contains("a.toml") && e.contains("rollout.max_rows"), "{e}");
    ok(&["--stage", "rl", a.to_str().unwrap()]);
    let rows = lines(&fx.dir.join("rl-a/metrics.jsonl"));
    let trained: u64 = rows.iter().filter_map(|r| r["trained_trajectories"].as_u64()).sum();
    assert!(trained > 0, "no group had reward variance; the test would not exercise the update: {rows:?}");
    for key in ["reward", "format_ok", "success_qa", "generate_s", "sandbox_s", "update_s", "response_tokens", "turns"] {
        assert!(rows.iter().any(|r| r.get(key).is_some()), "metrics.jsonl lacks {key}");
    }
    assert!(rows.iter().any(|r| r.get("clip_fraction").is_some() && r.get("entropy").is_some()));
    assert!(rows.iter().any(|r| r["kl_ref"].as_f64().is_some_and(|k| k.is_finite() && k >= -1e-6)), "KL to the reference is logged");
    assert!(rows.iter().filter(|r| r.get("eval_success").is_some()).count() == 2, "held-out evaluation before and after");
    let weights = |run: &str| std::fs::read(fx.dir.join(run).join("final/model.safetensors")).unwrap();
    assert!(weights("rl-a") != std::fs::read(fx.dir.join("sft/final/model.safetensors")).unwrap(), "the policy changed");
    for png in ["reward.png", "success.png"] {
        assert_eq!(&std::fs::read(fx.dir.join("rl-a").join(png)).unwrap()[..4], b"\x89PNG");
    }
    // The rollouts, as records: exactly the ids, mask and log-probs the update used.
    let rollouts: Vec<datasets::Rollout> = datasets::read_all(&fx.dir.join("rl-a/rollouts/step-00000003")).unwrap();
    assert_eq!(rollouts.len(), 16);
    assert!(rollouts.iter().all(|r| r.token_ids.len() == r.loss_mask.len() && r.loss_mask.len() == r.logprobs.len()));

    // Killed after its first checkpoint, then resumed: the same rollouts and weights.
    let mut child = trainer_cmd(&["--stage", "rl", b.to_str().unwrap()]).stderr(std::process::Stdio::null()).spawn().unwrap();
    while !fx.dir.join("rl-b/checkpoints/step-00000001/state.json").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = ok(&["--stage", "rl", b.to_str().unwrap(), "--resume", "auto"]);
    assert!(log.contains("resumed at step"), "{log}");
    let ids = |run: &str| -> Vec<Vec<u32>> {
        let r: Vec<datasets::Rollout> = datasets::read_all(&fx.dir.join(run).join("rollouts/step-00000003")).unwrap();
        r.into_iter().map(|r| r.token_ids).collect()
    };
    assert_eq!(ids("rl-a"), ids("rl-b"), "step 3 drew other tasks or samples after the resume");
    assert!(weights("rl-a") == weights("rl-b"), "resumed RL run ends with other weights");

    // Data parallel (two replicas on a CPU build): rollouts shared out by task, the update
    // by micro-batch; the step's first two tasks are rl-a's (same loader), each a group.
    let c = rl("rl-c");
    let log = ok(&["--stage", "rl", c.to_str().unwrap(), "--set", "compute.devices=2", "--set", "train.steps=1", "--set", "grpo.micro_batch_tokens=64"]);
    assert!(log.contains("data parallel on 2 devices"), "{log}");
    let step1 = |run: &str| -> Vec<datasets::Rollout> { datasets::read_all(&fx.dir.join(run).join("rollouts/step-00000001")).unwrap() };
    let (dp, one) = (step1("rl-c"), step1("rl-a"));
    let tasks = |r: &[datasets::Rollout]| -> Vec<(String, u32)> { r.iter().map(|r| (r.task_id.clone(), r.sample)).collect() };
    assert_eq!(tasks(&dp), tasks(&one));
    let row = lines(&fx.dir.join("rl-c/metrics.jsonl")).into_iter().find(|r| r["step"] == 1 && r.get("reward").is_some()).unwrap();
    assert!(row["trained_trajectories"].as_u64().unwrap() == 0 || row["grad_norm"].as_f64().is_some_and(f64::is_finite), "{row}");
    // Resumed on another device count: said, since the rollouts then sample differently.
    let ck = fx.dir.join("rl-c/checkpoints/step-00000001");
    let log = ok(&["--stage", "rl", c.to_str().unwrap(), "--set", "train.steps=1", "--set", &format!("out=\"{}\"", fx.dir.join("rl-d").display()), "--resume", ck.to_str().unwrap()]);
    assert!(log.contains("resumed at step 1") && log.contains("stepped on 2 device(s) and goes on on 1"), "{log}");
    // Two machines of one device each (processes joined over TCP): the rollouts of two
    // devices (each rank's trajectories sent to the other, scored where their workspace
    // is), so rl-c's to the token; the update's gradient sums added across the ranks.
    let e = rl("rl-e");
    let logs = ranks(2, &["--stage", "rl", e.to_str().unwrap(), "--set", "train.steps=1", "--set", "grpo.micro_batch_tokens=64"]);
    for (r, (ok, log)) in logs.iter().enumerate() {
        assert!(ok, "rank {r} failed:\n{log}");
    }
    let read = |run: &str, f: &str| std::fs::read(fx.dir.join(run).join(f)).unwrap();
    assert_eq!(tasks(&step1("rl-e")), tasks(&step1("rl-c")));
    let sampled = |run: &str| -> Vec<(Vec<u32>, f32)> { step1(run).into_iter().map(|r| (r.token_ids, r.reward)).collect() };
    assert!(sampled("rl-e") == sampled("rl-c"), "step 1's rollouts or rewards differ");
    assert!(read("rl-e", "eval/step-00000000.jsonl") == read("rl-c", "eval/step-00000000.jsonl"), "held-out rollouts differ");
    let step_row = |run: &str| lines(&fx.dir.join(run).join("metrics.jsonl")).into_iter().find(|r| r["step"] == 1 && r.get("reward").is_some()).unwrap();
    let (rc, re) = (step_row("rl-c"), step_row("rl-e"));
    let (gc, ge) = (rc["grad_norm"].as_f64().unwrap(), re["grad_norm"].as_f64().unwrap());
    assert!((gc - ge).abs() <= 1e-6 * gc, "gradient norm {ge} on two machines vs {gc} on two devices");
    let floats = |run: &str| final_f32(&fx.dir.join(run));
    let (wc, we) = (floats("rl-c"), floats("rl-e"));
    let diff = wc.iter().zip(&we).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(wc.len() == we.len() && diff < 1e-6, "two machines: final weights differ from two devices' by {diff}");
}

#[test]
fn difficulty_order_walks_the_first_epoch_easy_to_hard_then_shuffles() {
    let fx = Fixture::new();
    let mix: curriculum::Mixture = toml::from_str(&format!(
        "heldout = 0.2\norder = \"difficulty\"\n[[sources]]\npath = \"{}\"\n", fx.dir.join("data").display())).unwrap();
    let split = mix.load().unwrap();
    let samples = &split.train[0].2;
    let n = samples.len();
    let mut loader = datasets::Loader::new(vec![datasets::Source { name: "d".into(), items: samples.clone(), weight: 1.0 }], 3).ordered_first_epoch();
    let draw = |loader: &mut datasets::Loader<curriculum::Sample>| {
        let (s, i) = loader.next_index();
        loader.items(s)[i].difficulty()
    };
    let first: Vec<f32> = (0..n).map(|_| draw(&mut loader)).collect();
    // The fixture's difficulty is (a + b) / 150 of each sum: the first epoch ascends.
    assert!(first.windows(2).all(|w| w[0] <= w[1]), "{first:?}");
    assert!(first[0] < first[n - 1]);
    let second: Vec<f32> = (0..n).map(|_| draw(&mut loader)).collect();
    assert!(second.windows(2).any(|w| w[0] > w[1]), "the second epoch is shuffled");
    let mut a = first.clone();
    let mut b = second.clone();
    a.sort_by(f32::total_cmp);
    b.sort_by(f32::total_cmp);
    assert_eq!(a, b, "each epoch takes every sample once");
}

#[test]
fn plan_counts_the_steps_and_vocabulary_a_run_will_have_before_it_runs() {
    let fx = Fixture::new();
    // Epochs, not max_steps: the plan must tokenize the data (with the BPE tokenizer the
    // run will train) to know the step count.
    let s1 = fx.config("p1", &fx.scratch(), "");
    std::fs::write(&s1, std::fs::read_to_string(&s1).unwrap().replace("max_steps = 24", "epochs = 1.5")).unwrap();
    let s2 = fx.config("p2", &fx.from_init(&fx.dir.join("p1/final")), "[compute]\ngradient_checkpointing = true\n");
    let curriculum = fx.dir.join("plan.toml");
    std::fs::write(&curriculum, format!("[[stage]]\nkind = \"sft-single\"\nconfig = \"{}\"\nfrom_previous = false\n\
                                         [[stage]]\nkind = \"sft-multi\"\nconfig = \"{}\"\n", s1.display(), s2.display())).unwrap();
    let o = stage(&["plan", curriculum.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (p1, p2) = (&plan["stages"][0], &plan["stages"][1]);
    // Stage 2 does not exist yet; the plan follows stage 1's model.
    assert_eq!(p2["model"]["vocab"], p1["model"]["vocab"]);
    assert_eq!(p2["steps"], 24);
    assert!(p1["measured"]["step_s"].as_f64().is_some_and(|s| s > 0.0), "{p1}");
    let parts = |p: &serde_json::Value| -> Vec<String> { p["memory"]["parts"].as_array().unwrap().iter().map(|x| x["part"].as_str().unwrap().to_string()).collect() };
    assert!(parts(p1).contains(&"activations".into()) && parts(p2).contains(&"layer inputs (checkpointing)".into()));

    // The run then takes exactly the planned steps with the planned vocabulary.
    ok(&["--stage", "sft-single", s1.to_str().unwrap()]);
    let outcome: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx.dir.join("p1/outcome.json")).unwrap()).unwrap();
    assert_eq!(outcome["steps"], p1["steps"]);
    eprintln!("planned and taken: {} steps", p1["steps"]);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx.dir.join("p1/final/config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"], p1["model"]["vocab"]);
    assert_eq!(p1["model"]["params"]["total"].as_u64().unwrap(), config_params(&fx.dir.join("p1/final")));

    // Bad input: a stage whose model does not exist yet, planned alone; several GPUs.
    let alone = fx.config("p3", &fx.from_init(Path::new("/not/yet/written")), "");
    let e = err_line(&["plan", alone.to_str().unwrap(), "--no-measure"]);
    assert!(e.contains("p3.toml") && e.contains("model.init") && e.contains("/not/yet/written"), "{e}");
    let e = err_line(&["plan", s1.to_str().unwrap(), "--gpus", "0"]);
    assert!(e.contains("compute.devices") && e.contains("at least 1"), "{e}");

    // Data parallel: each device keeps the AdamW moments of the parameters it owns (a
    // half of them here) and sums their gradients (ZeRO stage 1); the first device's share
    // of the forwards is what is timed.
    let o = stage(&["plan", s1.to_str().unwrap(), "--gpus", "2", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dp: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dp = &dp["stages"][0];
    assert_eq!(dp["devices"], 2);
    assert_eq!(dp["forwards_per_device"].as_u64().unwrap(), p1["forwards_per_step"].as_u64().unwrap().div_ceil(2));
    // Each device: half the f32 master weights, AdamW moments and gradient sums, a replica
    // and one micro-batch's gradients (f32 here): in f32 on two devices, the one-device sum.
    let p = p1["model"]["params"]["total"].as_f64().unwrap();
    let part = |s: &serde_json::Value, name: &str| s["memory"]["parts"].as_array().unwrap().iter().find(|x| x["part"] == name).map(|x| x["bytes"].as_f64().unwrap());
    assert_eq!(part(dp, "master weights (f32, a 1/2 shard)"), Some(2.0 * p));
    assert_eq!(part(dp, "AdamW moments (f32, a 1/2 shard)"), Some(4.0 * p));
    assert_eq!(part(dp, "gradient sums (f32, a 1/2 shard)"), Some(2.0 * p));
    assert_eq!((part(dp, "replica weights (f32)"), part(dp, "a micro-batch's gradients (f32)")), (Some(4.0 * p), Some(4.0 * p)));
    assert_eq!(dp["memory"]["total_bytes"], p1["memory"]["total_bytes"]);
    assert!(dp["measured"]["step_s"].as_f64().is_some_and(|s| s > 0.0), "{dp}");
}

/// Parameters of a checkpoint folder as safetensors stores them.
fn config_params(dir: &Path) -> u64 {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().iter().map(|(_, t)| t.shape().iter().product::<usize>() as u64).sum()
}

#[test]
fn submit_writes_an_sbatch_script_that_runs_and_resumes_the_stage() {
    let fx = Fixture::new();
    let cfg = fx.config("job", &fx.scratch(), "");
    // Stand-ins for Slurm's commands: srun runs its command; sbatch records its argument.
    let bin = fx.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = |name: &str, body: &str| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    exe("srun", "shift\nexec \"$@\"");
    exe("sbatch", &format!("echo \"$1\" > {}\necho 'Submitted batch job 4242'", fx.dir.join("sbatch-arg").display()));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let submit = |extra: &[&str]| {
        let mut args = vec!["submit", "--slurm", cfg.to_str().unwrap(), "--set", "train.max_steps=3", "--time", "00:30:00"];
        args.extend(extra);
        trainer_cmd(&args).env("PATH", &path).output().unwrap()
    };
    let o = submit(&["--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let script = fx.dir.join("job/job.sbatch");
    assert_eq!(std::fs::read_to_string(&script).unwrap(), text);
    for line in ["#SBATCH --requeue", "#SBATCH --signal=TERM@120", "#SBATCH --time=00:30:00", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "--stage sft-single", "--set 'train.max_steps=3' --resume auto"] {
        assert!(text.contains(line), "{line} missing in:\n{text}");
    }
    let mem: u64 = text.lines().find_map(|l| l.strip_prefix("#SBATCH --mem=")?.strip_suffix('G')?.parse().ok()).expect("a --mem line");
    assert!(mem >= 4, "{text}");
    assert!(!fx.dir.join("sbatch-arg").exists(), "--dry-run must not submit");

    // The script itself runs the stage (from any folder), and a second start resumes.
    let run = || Command::new("bash").arg(&script).current_dir("/").env("PATH", &path).output().unwrap();
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let outcome: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx.dir.join("job/outcome.json")).unwrap()).unwrap();
    assert_eq!(outcome["steps"], 3);
    assert!(String::from_utf8_lossy(&run().stderr).contains("finished earlier"));

    // Submitted through sbatch; bad requests get one line.
    let o = submit(&[]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Submitted batch job 4242"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(fx.dir.join("sbatch-arg")).unwrap().trim(), script.to_str().unwrap());
    // Two machines: srun starts the script's command once per node with its SLURM_PROCID
    // (here both on this machine, scontrol naming it as the first node).
    let logs = fx.dir.join("rank");
    exe("srun", &format!("while [ \"${{1#--}}\" != \"$1\" ]; do shift; done\nfor i in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_PROCID=$i \"$@\" 2> {}$i.log & done\n\
                          rc=0\nfor p in $(jobs -p); do wait $p || rc=1; done\nexit $rc", logs.display()));
    exe("scontrol", "echo 127.0.0.1");
    let two = fx.config("two", &fx.scratch(), "");
    let o = trainer_cmd(&["submit", "--slurm", two.to_str().unwrap(), "--set", "train.max_steps=3", "--nodes", "2", "--dry-run"]).env("PATH", &path).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("#SBATCH --nodes=2"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let o = Command::new("bash").arg(fx.dir.join("two/two.sbatch")).current_dir("/").env("PATH", &path)
        .envs([("SLURM_NNODES", "2"), ("SLURM_JOB_NODELIST", "n[1-2]"), ("SLURM_JOB_ID", "7"), ("MASTER_PORT", &port)]).output().unwrap();
    let log = |r: usize| std::fs::read_to_string(fx.dir.join(format!("rank{r}.log"))).unwrap();
    assert!(o.status.success(), "{}\n{}\n{}", String::from_utf8_lossy(&o.stderr), log(0), log(1));
    assert!(log(0).contains("rank 0 of 2 joined") && log(1).contains("rank 1 of 2 joined"), "{}\n{}", log(0), log(1));
    let outcome: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx.dir.join("two/outcome.json")).unwrap()).unwrap();
    assert_eq!(outcome["steps"], 3);
    let e = err_line(&["submit", "--slurm", cfg.to_str().unwrap(), "--nodes", "0"]);
    assert!(e.contains("--nodes 0"), "{e}");
    if !model::ON_GPU {
        let e = err_line(&["submit", "--slurm", cfg.to_str().unwrap(), "--gpus-per-node", "2", "--dry-run"]);
        assert!(e.contains("compute.devices = 2") && e.contains("CPU build"), "{e}");
    }
    let e = err_line(&["submit", "--slurm", cfg.to_str().unwrap(), "--stage", "sft"]);
    assert!(e.contains("--stage sft"), "{e}");
}
