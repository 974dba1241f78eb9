//! `config.json` of a Qwen3 checkpoint, read in both styles found in the wild:
//! published checkpoints write `rope_theta` + `rope_scaling`, transformers 5 writes
//! `rope_parameters`. The original JSON is kept so saving writes back every field we
//! do not interpret.
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// How rotary frequencies are computed (transformers' `rope_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Default,
    /// YaRN as transformers implements it (`_compute_yarn_parameters`).
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: Option<f64>,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
        truncate: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Qwen3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    /// dtype of the weights on disk ("bfloat16", "float16", "float32").
    pub dtype: String,
    pub eos_token_ids: Vec<u32>,
    /// The file as read, written back (with `vocab_size` updated) on save.
    pub raw: Map<String, Value>,
}

struct Fields<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::config(self.path, field, reason)
    }
    fn usize(&self, field: &str) -> Result<usize> {
        match self.map.get(field) {
            None => Err(self.err(field, "missing")),
            Some(v) => self.as_usize(field, v),
        }
    }
    fn as_usize(&self, field: &str, v: &Value) -> Result<usize> {
        v.as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| self.err(field, format!("expected a positive integer, found {v}")))
    }
    fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.as_usize(field, v).map(Some),
        }
    }
    fn opt_f64(&self, map: &Map<String, Value>, field: &str) -> Result<Option<f64>> {
        match map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a number, found {v}"))),
        }
    }
    fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected true or false, found {v}"))),
        }
    }
}

impl Qwen3Config {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("config.json"))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|source| Error::Json { path: PathBuf::from(path), source })?;
        let Value::Object(map) = value else {
            return Err(Error::config(path, "(root)", "expected a JSON object"));
        };
        Self::from_map(path, map)
    }

    fn from_map(path: &Path, map: Map<String, Value>) -> Result<Self> {
        let f = Fields { path, map: &map };
        let model_type = map.get("model_type").and_then(Value::as_str).unwrap_or("");
        let archs: Vec<&str> = map
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let known = model_type == "qwen3" || archs.contains(&"Qwen3ForCausalLM");
        if !known {
            let found = if archs.is_empty() { model_type.to_string() } else { archs.join(",") };
            return Err(f.err(
                "architectures",
                format!("unsupported architecture `{found}` (this build supports Qwen3ForCausalLM / model_type qwen3)"),
            ));
        }
        if let Some(act) = map.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(f.err("hidden_act", format!("only `silu` is supported, found `{act}`")));
            }
        }
        if f.opt_bool("use_sliding_window")?.unwrap_or(false) {
            return Err(f.err("use_sliding_window", "sliding-window attention is not supported"));
        }
        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(f.err(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = f.opt_usize("head_dim")?.unwrap_or(hidden_size / num_attention_heads);
        if head_dim % 2 != 0 {
            return Err(f.err("head_dim", format!("must be even for rotary embeddings, found {head_dim}")));
        }
        let max_position_embeddings = f.opt_usize("max_position_embeddings")?.unwrap_or(32768);
        let (rope_theta, rope_scaling) = read_rope(&f, max_position_embeddings)?;
        let dtype = map
            .get("torch_dtype")
            .or_else(|| map.get("dtype"))
            .and_then(Value::as_str)
            .unwrap_or("float32")
            .to_string();
        if !matches!(dtype.as_str(), "bfloat16" | "float16" | "float32") {
            return Err(f.err("torch_dtype", format!("unsupported dtype `{dtype}`")));
        }
        let eos_token_ids = match map.get("eos_token_id") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect(),
            Some(v) => v.as_u64().map(|x| vec![x as u32]).ok_or_else(|| {
                f.err("eos_token_id", format!("expected an integer or a list, found {v}"))
            })?,
        };
        Ok(Self {
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f.opt_f64(&map, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            attention_bias: f.opt_bool("attention_bias")?.unwrap_or(false),
            dtype,
            eos_token_ids,
            raw: map.clone(),
        })
    }

    /// The JSON to write next to saved weights: the original fields, current sizes.
    pub fn to_json(&self) -> Value {
        let mut raw = self.raw.clone();
        raw.insert("vocab_size".into(), self.vocab_size.into());
        Value::Object(raw)
    }
}

/// `rope_parameters` (transformers 5) wins over `rope_theta` + `rope_scaling`.
fn read_rope(f: &Fields, max_pos: usize) -> Result<(f64, RopeScaling)> {
    let (field, params) = match (f.map.get("rope_parameters"), f.map.get("rope_scaling")) {
        (Some(Value::Object(p)), _) => ("rope_parameters", Some(p)),
        (_, Some(Value::Object(p))) => ("rope_scaling", Some(p)),
        (_, Some(Value::Null) | None) => ("rope_scaling", None),
        (_, Some(v)) => return Err(f.err("rope_scaling", format!("expected an object, found {v}"))),
    };
    let theta = params
        .and_then(|p| f.opt_f64(p, "rope_theta").transpose())
        .transpose()?
        .or(f.opt_f64(f.map, "rope_theta")?)
        .unwrap_or(10000.0);
    let Some(p) = params else { return Ok((theta, RopeScaling::Default)) };
    let kind = p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str).unwrap_or("default");
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "yarn" => {
            let num = |k: &str| f.opt_f64(p, k).map_err(|_| f.err(&format!("{field}.{k}"), "expected a number"));
            let original = num("original_max_position_embeddings")?.map(|x| x as usize).unwrap_or(max_pos);
            RopeScaling::Yarn {
                // transformers: a missing factor is max_position_embeddings / original.
                factor: num("factor")?.unwrap_or(max_pos as f64 / original as f64),
                original_max_position_embeddings: original,
                beta_fast: num("beta_fast")?.unwrap_or(32.0),
                beta_slow: num("beta_slow")?.unwrap_or(1.0),
                attention_factor: num("attention_factor")?,
                mscale: num("mscale")?,
                mscale_all_dim: num("mscale_all_dim")?,
                truncate: p.get("truncate").and_then(Value::as_bool).unwrap_or(true),
            }
        }
        other => {
            return Err(f.err(&format!("{field}.rope_type"), format!("unsupported rope type `{other}` (default and yarn are)")))
        }
    };
    Ok((theta, scaling))
}

impl Qwen3Config {
    /// Records the tokenizer's `eos`/`pad`/`bos` ids as `{key}_token_id` in config.json,
    /// as transformers writes them for a new model.
    pub fn set_special_token_ids(&mut self, tok: &crate::Tokenizer) {
        for key in ["eos_token", "pad_token", "bos_token"] {
            if let Some(id) = tok.special_token(key).and_then(|t| tok.token_to_id(&t)) {
                self.raw.insert(format!("{key}_id"), id.into());
            }
        }
    }
}
