//! Hugging Face checkpoint folders in and out: `config.json` plus one `model.safetensors`
//! or shards listed by `model.safetensors.index.json`, in bf16, f16 or f32. Loading streams
//! one shard at a time (memory-mapped) and hands each tensor to the model as it is
//! converted, so the weights are never held twice; saving writes each shard to a temporary
//! name and renames it, so a killed save never leaves a half-written file under the real name.
use crate::config::Qwen3Config;
use crate::error::{Error, Result};
use crate::qwen3::{linear_from_hf, rms_norm, Attention, DecoderLayer, Mlp, Qwen3};
use crate::rope::Rope;
use burn::module::Param;
use burn::nn::Embedding;
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A tensor read from disk, as f32 in row-major order.
struct HostTensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Every tensor a Qwen3 checkpoint of this config holds, with its Hugging Face shape.
pub fn expected_tensors(cfg: &Qwen3Config) -> Vec<(String, Vec<usize>)> {
    let (h, d) = (cfg.hidden_size, cfg.head_dim);
    let (qd, kvd, ffn) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d, cfg.intermediate_size);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab_size, h])];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut add = |n: &str, s: Vec<usize>| out.push((format!("{p}.{n}"), s));
        add("input_layernorm.weight", vec![h]);
        add("self_attn.q_proj.weight", vec![qd, h]);
        add("self_attn.k_proj.weight", vec![kvd, h]);
        add("self_attn.v_proj.weight", vec![kvd, h]);
        add("self_attn.o_proj.weight", vec![h, qd]);
        if cfg.attention_bias {
            add("self_attn.q_proj.bias", vec![qd]);
            add("self_attn.k_proj.bias", vec![kvd]);
            add("self_attn.v_proj.bias", vec![kvd]);
            add("self_attn.o_proj.bias", vec![h]);
        }
        add("self_attn.q_norm.weight", vec![d]);
        add("self_attn.k_norm.weight", vec![d]);
        add("post_attention_layernorm.weight", vec![h]);
        add("mlp.gate_proj.weight", vec![ffn, h]);
        add("mlp.up_proj.weight", vec![ffn, h]);
        add("mlp.down_proj.weight", vec![h, ffn]);
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, h]));
    }
    out
}

/// The shard files of a checkpoint folder and which tensors each holds (None = all).
fn shard_plan(dir: &Path) -> Result<Vec<(PathBuf, Option<Vec<String>>)>> {
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: index.clone(), source })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::config(&index, "weight_map", "missing or not an object"))?;
        let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| Error::config(&index, &format!("weight_map.{name}"), "expected a file name"))?;
            by_file.entry(file.to_string()).or_default().push(name.clone());
        }
        Ok(by_file.into_iter().map(|(f, names)| (dir.join(f), Some(names))).collect())
    } else if dir.join(SINGLE_FILE).exists() {
        Ok(vec![(dir.join(SINGLE_FILE), None)])
    } else {
        Err(Error::Invalid(format!(
            "{}: no {SINGLE_FILE} or {INDEX_FILE} in this folder",
            dir.display()
        )))
    }
}

fn to_f32(path: &Path, name: &str, view: &safetensors::tensor::TensorView) -> Result<Vec<f32>> {
    let bytes = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => return Err(Error::tensor(path, name, format!("unsupported dtype {other:?} (bf16, f16, f32 are)"))),
    })
}

/// Reads every tensor `cfg` needs, shard by shard, checking names and shapes.
fn read_tensors(dir: &Path, cfg: &Qwen3Config) -> Result<HashMap<String, HostTensor>> {
    let expected: HashMap<String, Vec<usize>> = expected_tensors(cfg).into_iter().collect();
    let mut out = HashMap::with_capacity(expected.len());
    for (path, listed) in shard_plan(dir)? {
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the file is opened read-only and we only read it while mapped.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| Error::Safetensors { path: path.clone(), reason: e.to_string() })?;
        let mut names: Vec<String> = match listed {
            Some(names) => names,
            None => st.names().into_iter().map(String::from).collect(),
        };
        names.sort(); // a deterministic first error

        for name in names {
            let view = st
                .tensor(&name)
                .map_err(|_| Error::tensor(&path, &name, "listed in the index but not in this file"))?;
            let Some(shape) = expected.get(&name) else {
                if name.ends_with("rotary_emb.inv_freq") || (cfg.tie_word_embeddings && name == "lm_head.weight") {
                    continue; // buffers and tied copies that transformers also ignores
                }
                return Err(Error::tensor(&path, &name, "not a Qwen3 tensor for this config.json"));
            };
            if view.shape() != shape.as_slice() {
                return Err(Error::tensor(
                    &path,
                    &name,
                    format!("shape {:?}, but config.json implies {:?}", view.shape(), shape),
                ));
            }
            out.insert(name.clone(), HostTensor { shape: shape.clone(), data: to_f32(&path, &name, &view)? });
        }
    }
    if let Some((missing, _)) = expected_tensors(cfg).into_iter().find(|(n, _)| !out.contains_key(n)) {
        return Err(Error::tensor(dir, &missing, "missing from the checkpoint"));
    }
    Ok(out)
}

struct Builder<'a, B: Backend> {
    tensors: HashMap<String, HostTensor>,
    device: &'a B::Device,
}

impl<B: Backend> Builder<'_, B> {
    fn take(&mut self, name: &str) -> HostTensor {
        self.tensors.remove(name).expect("presence checked by read_tensors")
    }
    fn vector(&mut self, name: &str) -> Tensor<B, 1> {
        let t = self.take(name);
        Tensor::from_data(TensorData::new(t.data, t.shape), self.device)
    }
    fn matrix(&mut self, name: &str) -> Tensor<B, 2> {
        let t = self.take(name);
        Tensor::from_data(TensorData::new(t.data, t.shape), self.device)
    }
    /// HF `[out, in]` → burn `[in, out]`, transposed on the host so the result is contiguous.
    fn linear(&mut self, prefix: &str, with_bias: bool) -> burn::nn::Linear<B> {
        let t = self.take(&format!("{prefix}.weight"));
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let w = transpose(&t.data, rows, cols);
        drop(t);
        let w = Tensor::from_data(TensorData::new(w, [cols, rows]), self.device);
        let bias = with_bias.then(|| self.vector(&format!("{prefix}.bias")));
        linear_from_hf(w, bias)
    }
}

pub(crate) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Loads the weights of an HF folder into a model on `device`.
pub fn load<B: Backend>(dir: &Path, cfg: &Qwen3Config, device: &B::Device) -> Result<Qwen3<B>> {
    let tensors = read_tensors(dir, cfg)?;
    let mut b = Builder::<B> { tensors, device };
    let eps = cfg.rms_norm_eps;
    let embed = b.matrix("model.embed_tokens.weight");
    let layers = (0..cfg.num_hidden_layers)
        .map(|i| {
            let p = format!("model.layers.{i}");
            DecoderLayer {
                self_attn: Attention {
                    q_proj: b.linear(&format!("{p}.self_attn.q_proj"), cfg.attention_bias),
                    k_proj: b.linear(&format!("{p}.self_attn.k_proj"), cfg.attention_bias),
                    v_proj: b.linear(&format!("{p}.self_attn.v_proj"), cfg.attention_bias),
                    o_proj: b.linear(&format!("{p}.self_attn.o_proj"), cfg.attention_bias),
                    q_norm: rms_norm(b.vector(&format!("{p}.self_attn.q_norm.weight")), eps),
                    k_norm: rms_norm(b.vector(&format!("{p}.self_attn.k_norm.weight")), eps),
                    num_heads: cfg.num_attention_heads,
                    num_kv_heads: cfg.num_key_value_heads,
                    head_dim: cfg.head_dim,
                },
                mlp: Mlp {
                    gate_proj: b.linear(&format!("{p}.mlp.gate_proj"), false),
                    up_proj: b.linear(&format!("{p}.mlp.up_proj"), false),
                    down_proj: b.linear(&format!("{p}.mlp.down_proj"), false),
                },
                input_layernorm: rms_norm(b.vector(&format!("{p}.input_layernorm.weight")), eps),
                post_attention_layernorm: rms_norm(b.vector(&format!("{p}.post_attention_layernorm.weight")), eps),
            }
        })
        .collect();
    let norm = rms_norm(b.vector("model.norm.weight"), eps);
    let lm_head = (!cfg.tie_word_embeddings).then(|| b.linear("lm_head", false));
    Ok(Qwen3 {
        embed_tokens: Embedding { weight: Param::from_tensor(embed) },
        layers,
        norm,
        lm_head,
        rope: Rope::new(cfg),
        compute: Default::default(),
    })
}

/// The model's tensors under their HF names and shapes, in checkpoint order, as f32 host
/// data produced one at a time (so saving holds at most one shard's bytes extra).
fn hf_tensor<B: Backend>(model: &Qwen3<B>, name: &str) -> Vec<f32> {
    let data = |t: Tensor<B, 2>| t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 data");
    let data1 = |t: Tensor<B, 1>| t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 data");
    let linear_w = |l: &burn::nn::Linear<B>| {
        let [i, o] = l.weight.dims();
        transpose(&data(l.weight.val()), i, o)
    };
    if name == "model.embed_tokens.weight" {
        return data(model.embed_tokens.weight.val());
    }
    if name == "model.norm.weight" {
        return data1(model.norm.gamma.val());
    }
    if name == "lm_head.weight" {
        return linear_w(model.lm_head.as_ref().expect("untied head"));
    }
    let rest = name.strip_prefix("model.layers.").expect("layer tensor");
    let (idx, field) = rest.split_once('.').expect("layer.field");
    let layer = &model.layers[idx.parse::<usize>().expect("layer index")];
    let (a, m) = (&layer.self_attn, &layer.mlp);
    let bias = |l: &burn::nn::Linear<B>| data1(l.bias.as_ref().expect("bias").val());
    match field {
        "input_layernorm.weight" => data1(layer.input_layernorm.gamma.val()),
        "post_attention_layernorm.weight" => data1(layer.post_attention_layernorm.gamma.val()),
        "self_attn.q_norm.weight" => data1(a.q_norm.gamma.val()),
        "self_attn.k_norm.weight" => data1(a.k_norm.gamma.val()),
        "self_attn.q_proj.weight" => linear_w(&a.q_proj),
        "self_attn.k_proj.weight" => linear_w(&a.k_proj),
        "self_attn.v_proj.weight" => linear_w(&a.v_proj),
        "self_attn.o_proj.weight" => linear_w(&a.o_proj),
        "self_attn.q_proj.bias" => bias(&a.q_proj),
        "self_attn.k_proj.bias" => bias(&a.k_proj),
        "self_attn.v_proj.bias" => bias(&a.v_proj),
        "self_attn.o_proj.bias" => bias(&a.o_proj),
        "mlp.gate_proj.weight" => linear_w(&m.gate_proj),
        "mlp.up_proj.weight" => linear_w(&m.up_proj),
        "mlp.down_proj.weight" => linear_w(&m.down_proj),
        other => unreachable!("unknown tensor field {other}"),
    }
}

fn dtype_of(cfg: &Qwen3Config) -> (Dtype, usize) {
    match cfg.dtype.as_str() {
        "bfloat16" => (Dtype::BF16, 2),
        "float16" => (Dtype::F16, 2),
        _ => (Dtype::F32, 4),
    }
}

fn encode(data: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::BF16 => data.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
        Dtype::F16 => data.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
        _ => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write(&tmp).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes `config.json` and the weights (in `cfg.dtype`) to `dir`, sharding when the
/// weights exceed `max_shard_bytes` (with `model.safetensors.index.json`, as transformers).
pub fn save<B: Backend>(model: &Qwen3<B>, cfg: &Qwen3Config, dir: &Path, max_shard_bytes: usize) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (dtype, width) = dtype_of(cfg);
    let tensors = expected_tensors(cfg);
    // Plan shards from shapes alone, so only one shard's bytes are ever materialized.
    let mut shards: Vec<Vec<(String, Vec<usize>)>> = vec![vec![]];
    let mut size = 0;
    let mut total = 0;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * width;
        if size > 0 && size + bytes > max_shard_bytes {
            shards.push(vec![]);
            size = 0;
        }
        size += bytes;
        total += bytes;
        shards.last_mut().unwrap().push((name, shape));
    }
    let n = shards.len();
    let file_name = |i: usize| {
        if n == 1 { SINGLE_FILE.to_string() } else { format!("model-{:05}-of-{:05}.safetensors", i + 1, n) }
    };
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = shard
            .iter()
            .map(|(name, shape)| (name.clone(), shape.clone(), encode(&hf_tensor(model, name), dtype)))
            .collect();
        let views = encoded
            .iter()
            .map(|(name, shape, bytes)| {
                let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes)
                    .map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
                Ok((name.clone(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let path = dir.join(file_name(i));
        write_atomic(&path, |tmp| {
            safetensors::serialize_to_file(views, metadata.clone(), tmp).map_err(std::io::Error::other)
        })?;
        for (name, _) in shard {
            weight_map.insert(name.clone(), file_name(i).into());
        }
    }
    if n > 1 {
        let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        let path = dir.join(INDEX_FILE);
        write_atomic(&path, |tmp| std::fs::write(tmp, serde_json::to_string_pretty(&index).unwrap()))?;
    } else {
        // A stale index from an earlier sharded save would shadow the single file.
        let _ = std::fs::remove_file(dir.join(INDEX_FILE));
    }
    let path = dir.join("config.json");
    write_atomic(&path, |tmp| std::fs::write(tmp, serde_json::to_string_pretty(&cfg.to_json()).unwrap()))
}
