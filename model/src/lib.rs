//! The `model` crate: the Qwen3 decoder in burn, Hugging Face checkpoint folders in and
//! out, the checkpoint's tokenizer and chat template, and batched generation.
pub mod adamw;
pub mod attention;
pub mod backend;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod embedding;
pub mod error;
pub mod generate;
mod lanes;
pub mod lm_head;
pub mod matmul;
pub mod norm;
pub mod qwen3;
pub mod rope;
pub mod sampling;
pub mod swiglu;
pub mod tokenizer;

pub use backend::{ModelBackend, TrainingBackend};
pub use chat::ChatTemplate;
pub use config::Qwen3Config;
pub use error::{Error, Result};
pub use generate::{generate, generate_with, policy_temperature, Finish, Generation, RowCache, SamplingConfig};
pub use qwen3::{AttnMask, Compute, KvCache, Precision, Qwen3, DEFAULT_KV_BLOCK};
pub use tokenizer::{Tokenizer, DEEPANALYZE_TAGS};

use burn::module::Param;
use burn::nn::{EmbeddingConfig, Initializer, LinearConfig, RmsNormConfig};
use burn::prelude::*;
use std::path::{Path, PathBuf};

/// The backend this build computes on: burn's Flex on CPU by default, CUDA with
/// `--features cuda`.
#[cfg(all(feature = "flex", not(feature = "cuda")))]
pub type DefaultBackend = burn::backend::Flex;
#[cfg(feature = "cuda")]
pub type DefaultBackend = burn::backend::Cuda<f32>;

/// Whether [`DefaultBackend`] is CUDA (what code outside this crate asks instead of its
/// own features: a benchmark builds the model for CUDA without the trainer's `cuda`).
pub const ON_GPU: bool = cfg!(feature = "cuda");
/// [`DefaultBackend`] in words, for benchmark records.
pub const BACKEND_NAME: &str = match (ON_GPU, cfg!(feature = "fusion"), cfg!(feature = "autotune")) {
    (true, false, true) => "burn-cuda",
    (true, false, false) => "burn-cuda-untuned",
    (true, true, true) => "burn-cuda-fusion",
    (true, true, false) => "burn-cuda-fusion-untuned",
    (false, _, _) => "burn-flex",
};

/// Whether this build has GPU kernels of its own (`backend/cuda.rs`, `backend/kernels/`:
/// CUDA, not under fusion, whose tensors are its own; wgpu in the tests).
const OWN_KERNELS: bool = cfg!(any(all(feature = "cuda", not(feature = "fusion")), feature = "wgpu-kernels"));

/// Unless the variable is `0` (to A/B a kernel in one build).
fn unless_off(var: &str, on: &'static std::sync::OnceLock<bool>) -> bool {
    OWN_KERNELS && *on.get_or_init(|| std::env::var(var).map_or(true, |v| v.trim() != "0"))
}

/// Whether CUDA's large bf16/f16 products run the kernel chosen in advance
/// (`backend/cuda.rs`): yes unless `MODEL_PINNED_MATMUL=0` (burn's matmul for every product).
pub fn pinned_matmul() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    unless_off("MODEL_PINNED_MATMUL", &ON)
}

/// Whether CUDA runs attention's softmax, RMSNorm, silu(gate) ∘ up, RoPE and AdamW on kernels of
/// its own, one each way (`backend/kernels/`): yes unless `MODEL_OWN_KERNELS=0` (burn's ops).
pub fn own_kernels() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    unless_off("MODEL_OWN_KERNELS", &ON)
}

/// [`BACKEND_NAME`], and which of this build's own kernels are turned off.
pub fn backend_label() -> String {
    let off = [(pinned_matmul(), ", burn matmul"), (own_kernels(), ", burn ops")];
    let off: String = off.iter().filter(|(on, _)| OWN_KERNELS && !on).map(|(_, what)| *what).collect();
    format!("{BACKEND_NAME}{off}")
}

/// Call first thing in a binary that computes on the default backend. On CUDA it checks
/// that the driver and NVRTC load (a machine without them gets one line, not cudarc's
/// panic from inside the first tensor op), and keeps compiled kernels on disk: burn's
/// kernels are compiled at run time (NVRTC) and their launch configurations autotuned;
/// cubecl keeps autotune results on disk by default but not the compiled PTX, so every
/// process paid every compile again. They now sit beside the autotune results (`target/`
/// when run inside a Cargo workspace, else `~/.cache/cubecl`; a cluster rank's both in
/// `cubecl-rank-N` there); a `cubecl.toml` (cwd or a parent) that names a cache wins.
///
/// On CPU it keeps freed memory in the process: burn's Flex allocates and frees large
/// temporaries op after op, and glibc returns every block over 128 KB to the kernel on free
/// and faults it in again, zeroed, on the next allocation (a tenth of the tiny default's
/// SFT step, measured back to back). Every block now comes from the heap (no mmap
/// threshold, so the 0.6B shape's LM-head chunks and gradients too; glibc still maps one
/// where the heap cannot grow), and the heap is never trimmed: it grows to the step's peak
/// and stays there (with 1 GiB kept, the 0.6B shape's step gave back and faulted in
/// gigabytes each step: 8.4-9.1 → 7.1-7.5 s a step).
pub fn init_runtime() -> std::result::Result<(), String> {
    #[cfg(all(feature = "flex", not(feature = "cuda"), target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread computes.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
    #[cfg(feature = "cuda")]
    {
        use burn::cubecl::config::{cache::CacheConfig, CubeClRuntimeConfig, RuntimeConfig};
        let loads = |names: &[&str]| {
            names.iter().any(|n| {
                let name = std::ffi::CString::new(*n).expect("no NUL");
                !unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_LAZY) }.is_null()
            })
        };
        if !loads(&["libcuda.so.1", "libcuda.so"]) {
            return Err("this is the CUDA build (--features cuda) and the NVIDIA driver's libcuda.so.1 is not found \
                        (not installed, or not on LD_LIBRARY_PATH): run it on a machine with an NVIDIA GPU, or use the default (CPU) build"
                .into());
        }
        if !loads(&["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]) {
            return Err("the CUDA build compiles its kernels at run time with NVRTC, and libnvrtc.so is not found: install the \
                        CUDA toolkit, or `pip install nvidia-cuda-nvrtc` and put the folder holding its libnvrtc.so.* on LD_LIBRARY_PATH"
                .into());
        }
        let mut state = CubeClRuntimeConfig::storage().lock();
        if state.is_none() {
            // What cubecl's own first read would load, plus the PTX cache.
            let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
            // The ranks of a cluster run (`trainer submit --nodes`) usually share a filesystem,
            // and so `target/`: each keeps its caches in its own folder rather than all
            // writing the same files at once.
            let rank = std::env::var("WORLD_SIZE").ok().filter(|w| w.trim() != "1").and_then(|_| std::env::var("RANK").ok());
            let ours = match rank {
                Some(rank) => {
                    let own = CacheConfig::File(CacheConfig::Target.root().join(format!("cubecl-rank-{}", rank.trim())));
                    if matches!(config.autotune.cache, CacheConfig::Target) {
                        config.autotune.cache = own.clone();
                    }
                    own
                }
                None => CacheConfig::Target,
            };
            config.compilation.cache.get_or_insert(ours);
            *state = Some(std::sync::Arc::new(config));
        }
    }
    Ok(())
}

/// `n` devices for data-parallel training: CUDA devices 0..n (an error naming how many
/// there are when fewer), or on CPU `n` replicas of the one device (threads sharing its
/// cores: on small models, where per-op overhead leaves cores idle, that is faster).
#[cfg(any(feature = "flex", feature = "cuda"))]
pub fn devices(n: usize) -> std::result::Result<Vec<Device<DefaultBackend>>, String> {
    use burn::tensor::backend::{Device as _, DeviceId};
    if n == 0 {
        return Err("at least one device is needed".into());
    }
    let first = Device::<DefaultBackend>::default();
    if ON_GPU {
        let id = first.to_id();
        let available = <DefaultBackend as Backend>::device_count(id.type_id);
        if n > available {
            return Err(format!("{n} devices asked for, this machine has {available}"));
        }
        return Ok((0..n as u32).map(|i| Device::<DefaultBackend>::from_id(DeviceId { index_id: i as _, ..id })).collect());
    }
    Ok(vec![first; n])
}

/// Default shard size when saving (transformers' default is 5 GB, we use 4 GiB).
pub const DEFAULT_MAX_SHARD_BYTES: usize = 4 << 30;

/// An HF checkpoint folder, loaded: config, weights, and tokenizer + template when present.
pub struct Checkpoint<B: Backend> {
    pub dir: PathBuf,
    pub config: Qwen3Config,
    pub model: Qwen3<B>,
    pub tokenizer: Option<Tokenizer>,
}

impl<B: Backend> Checkpoint<B> {
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Invalid(format!("{}: not a checkpoint folder", dir.display())));
        }
        let config = Qwen3Config::from_dir(dir)?;
        let tokenizer = if dir.join("tokenizer.json").exists() { Some(Tokenizer::from_dir(dir)?) } else { None };
        let model = checkpoint::load(dir, &config, device)?;
        Ok(Self { dir: dir.to_path_buf(), config, model, tokenizer })
    }

    /// The tokenizer, or an error naming the folder.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| Error::Tokenizer {
            path: self.dir.join("tokenizer.json"),
            reason: "missing (this command needs the checkpoint's tokenizer)".into(),
        })
    }

    pub fn chat_template(&self) -> Result<ChatTemplate> {
        ChatTemplate::from_dir(&self.dir, &self.tokenizer()?.config)
    }

    /// Token ids that end generation: config.json's and generation_config.json's
    /// `eos_token_id`, and the tokenizer's `eos_token`.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let mut ids = self.config.eos_token_ids.clone();
        let gen = self.dir.join("generation_config.json");
        if let Some(v) = std::fs::read_to_string(gen).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) {
            match &v["eos_token_id"] {
                serde_json::Value::Array(a) => ids.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32)),
                x => ids.extend(x.as_u64().map(|x| x as u32)),
            }
        }
        if let Some(t) = &self.tokenizer {
            ids.extend(t.special_token("eos_token").and_then(|s| t.token_to_id(&s)));
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Adds the DeepAnalyze tags the tokenizer lacks and gives each new id an embedding
    /// (and LM-head row) equal to the mean of the existing vocabulary's rows, growing the
    /// matrices when the ids exceed them. Returns the added ids.
    pub fn add_deepanalyze_tags(&mut self) -> Result<Vec<u32>> {
        let tok = self.tokenizer.as_mut().ok_or_else(|| Error::Invalid("no tokenizer to add tags to".into()))?;
        let old_len = tok.len();
        let added = tok.add_deepanalyze_tags();
        if !added.is_empty() {
            let new_rows = tok.len().max(self.config.vocab_size);
            let old_rows = old_len.min(self.config.vocab_size);
            self.model.init_rows_with_mean(&added, old_rows, new_rows);
            self.config.vocab_size = new_rows;
        }
        Ok(added)
    }

    /// Writes an HF folder: weights, config.json, tokenizer files, and any other small
    /// files of the source folder (generation_config.json, chat_template.jinja).
    pub fn save(&self, dir: &Path, max_shard_bytes: usize) -> Result<()> {
        checkpoint::save(&self.model, &self.config, dir, max_shard_bytes)?;
        if let Some(t) = &self.tokenizer {
            t.save(dir)?;
        }
        for name in ["generation_config.json", "chat_template.jinja"] {
            let src = self.dir.join(name);
            if src.exists() && src != dir.join(name) {
                std::fs::copy(&src, dir.join(name)).map_err(|e| Error::io(&src, e))?;
            }
        }
        Ok(())
    }
}

impl<B: Backend> Qwen3<B> {
    /// A randomly initialised model (normal, std 0.02, as transformers), norms at one.
    pub fn init(cfg: &Qwen3Config, device: &B::Device) -> Self {
        let init = Initializer::Normal { mean: 0.0, std: 0.02 };
        let linear = |i: usize, o: usize, bias: bool| {
            LinearConfig::new(i, o).with_bias(bias).with_initializer(init.clone()).init(device)
        };
        let norm = |d: usize| RmsNormConfig::new(d).with_epsilon(cfg.rms_norm_eps).init(device);
        let (h, d, bias) = (cfg.hidden_size, cfg.head_dim, cfg.attention_bias);
        let (qd, kvd) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
        Qwen3 {
            embed_tokens: EmbeddingConfig::new(cfg.vocab_size, h).with_initializer(init.clone()).init(device),
            layers: (0..cfg.num_hidden_layers)
                .map(|_| qwen3::DecoderLayer {
                    self_attn: qwen3::Attention {
                        q_proj: linear(h, qd, bias),
                        k_proj: linear(h, kvd, bias),
                        v_proj: linear(h, kvd, bias),
                        o_proj: linear(qd, h, bias),
                        q_norm: norm(d),
                        k_norm: norm(d),
                        num_heads: cfg.num_attention_heads,
                        num_kv_heads: cfg.num_key_value_heads,
                        head_dim: d,
                    },
                    mlp: qwen3::Mlp {
                        gate_proj: linear(h, cfg.intermediate_size, false),
                        up_proj: linear(h, cfg.intermediate_size, false),
                        down_proj: linear(cfg.intermediate_size, h, false),
                    },
                    input_layernorm: norm(h),
                    post_attention_layernorm: norm(h),
                })
                .collect(),
            norm: norm(h),
            lm_head: (!cfg.tie_word_embeddings).then(|| linear(h, cfg.vocab_size, false)),
            rope: rope::Rope::new(cfg),
            compute: qwen3::Compute::default(),
        }
    }

    /// Sets rows `ids` of the embedding (and untied LM head) to the mean of rows
    /// `0..old_rows`, first growing both to `new_rows`.
    fn init_rows_with_mean(&mut self, ids: &[u32], old_rows: usize, new_rows: usize) {
        let set = |m: Tensor<B, 2>| -> Tensor<B, 2> {
            let [rows, d] = m.dims();
            let mean = m.clone().slice([0..old_rows, 0..d]).mean_dim(0);
            let mut m = if new_rows > rows {
                Tensor::cat(vec![m, mean.clone().repeat_dim(0, new_rows - rows)], 0)
            } else {
                m
            };
            for &id in ids {
                let id = id as usize;
                m = m.slice_assign([id..id + 1, 0..d], mean.clone());
            }
            m
        };
        self.embed_tokens.weight = Param::from_tensor(set(self.embed_tokens.weight.val()));
        if let Some(head) = &mut self.lm_head {
            // burn's Linear is [in, out]: vocabulary rows are columns here.
            head.weight = Param::from_tensor(set(head.weight.val().transpose()).transpose());
        }
    }
}
