//! The checkpoint's own tokenizer (`tokenizer.json`, via `tokenizers`), plus the ten
//! DeepAnalyze tags as plain added tokens. Tag ids are always read back from the
//! tokenizer: the published DeepAnalyze vocabulary and a fresh Qwen3 one differ.
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokenizers::AddedToken;

/// The trajectory tags, in the order the published checkpoint added them.
pub const DEEPANALYZE_TAGS: [&str; 10] = [
    "<Analyze>", "</Analyze>", "<Understand>", "</Understand>", "<Code>", "</Code>", "<Execute>",
    "</Execute>", "<Answer>", "</Answer>",
];

/// The special tokens of the built-in DeepAnalyze (DeepSeek-R1 style) chat template.
pub const TEMPLATE_SPECIALS: [&str; 4] = ["<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"];

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// `tokenizer_config.json` as read (empty when absent).
    pub config: serde_json::Map<String, Value>,
}

impl Tokenizer {
    /// Reads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::Tokenizer { path, reason: "missing".into() });
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer { path: path.clone(), reason: e.to_string() })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let config = if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
            match serde_json::from_str(&text).map_err(|source| Error::Json { path: cfg_path.clone(), source })? {
                Value::Object(m) => m,
                _ => return Err(Error::config(&cfg_path, "(root)", "expected a JSON object")),
            }
        } else {
            Default::default()
        };
        Ok(Self { inner, path, config })
    }

    /// Trains a byte-level BPE vocabulary of `vocab_size` ids on `texts` (Qwen2/3's
    /// pre-tokenization: digits one by one, so a number is copied digit by digit; no
    /// unknown bytes). The chat template's four special tokens come first and the ten
    /// DeepAnalyze tags are added tokens, so a tag is always one id.
    /// The config names the built-in DeepAnalyze template's end token as EOS.
    pub fn train_bpe<S: AsRef<str> + Send>(texts: impl Iterator<Item = S> + Send, vocab_size: usize) -> Result<Self> {
        use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::{DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder};
        let err = |e: tokenizers::Error| Error::Tokenizer { path: "(training)".into(), reason: e.to_string() };
        let specials: Vec<AddedToken> = TEMPLATE_SPECIALS.iter().map(|t| AddedToken::from(*t, true)).collect();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size.saturating_sub(DEEPANALYZE_TAGS.len()))
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tok = TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
            .with_model(BPE::default())
            .with_pre_tokenizer(Some(qwen_pre_tokenizer().map_err(err)?))
            .with_decoder(Some(ByteLevel::new(false, false, false).into()))
            .build()
            .map_err(err)?;
        tok.train(&mut trainer, texts).map_err(err)?;
        let inner = tokenizers::Tokenizer::from(tok);
        let mut decoder = serde_json::Map::new();
        for t in TEMPLATE_SPECIALS {
            let id = inner.token_to_id(t).expect("trained in as a special token");
            decoder.insert(id.to_string(), serde_json::json!({"content": t, "lstrip": false, "normalized": false,
                                                              "rstrip": false, "single_word": false, "special": true}));
        }
        let config = serde_json::json!({
            "bos_token": TEMPLATE_SPECIALS[0], "eos_token": TEMPLATE_SPECIALS[3], "pad_token": TEMPLATE_SPECIALS[3],
            "add_bos_token": false, "model_max_length": 32768, "tokenizer_class": "PreTrainedTokenizerFast",
            "added_tokens_decoder": decoder, "chat_template": crate::chat::DEEPANALYZE_TEMPLATE,
        });
        let serde_json::Value::Object(config) = config else { unreachable!() };
        let mut t = Self { inner, path: "(trained)".into(), config };
        t.add_deepanalyze_tags();
        Ok(t)
    }

    /// Number of ids the tokenizer can produce (base vocabulary plus added tokens).
    pub fn len(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes `text` exactly as given: no chat template, no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), reason: e.to_string() })
    }

    /// [`encode`](Self::encode) plus each token's byte span in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<(usize, usize)>)> {
        let e = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), reason: e.to_string() })?;
        Ok((e.get_ids().to_vec(), e.get_offsets().to_vec()))
    }

    /// Decodes ids back to text, special tokens included (what the model wrote).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), reason: e.to_string() })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// `bos_token` / `eos_token` etc. from tokenizer_config.json.
    pub fn special_token(&self, key: &str) -> Option<String> {
        special_token(&self.config, key)
    }

    /// Adds whichever DeepAnalyze tags the vocabulary lacks, as plain (non-special) tokens
    /// the way transformers' `add_tokens` does; returns the ids of the tags it added.
    pub fn add_deepanalyze_tags(&mut self) -> Vec<u32> {
        let missing: Vec<AddedToken> = DEEPANALYZE_TAGS
            .iter()
            .filter(|t| self.inner.token_to_id(t).is_none())
            .map(|t| AddedToken::from(*t, false).normalized(true))
            .collect();
        self.inner.add_tokens(&missing);
        missing.iter().map(|t| self.inner.token_to_id(&t.content).expect("just added")).collect()
    }

    /// Ids of the ten tags, in `DEEPANALYZE_TAGS` order; None if any is missing.
    pub fn deepanalyze_tag_ids(&self) -> Option<Vec<u32>> {
        DEEPANALYZE_TAGS.iter().map(|t| self.inner.token_to_id(t)).collect()
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`, recording any added
    /// tags in `added_tokens_decoder` so transformers sees the same vocabulary.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join("tokenizer.json");
        self.inner.save(&path, false).map_err(|e| Error::Tokenizer { path: path.clone(), reason: e.to_string() })?;
        if self.config.is_empty() {
            return Ok(());
        }
        let mut config = self.config.clone();
        if let Some(Value::Object(decoder)) = config.get_mut("added_tokens_decoder") {
            for tag in DEEPANALYZE_TAGS {
                if let Some(id) = self.inner.token_to_id(tag) {
                    decoder.entry(id.to_string()).or_insert_with(|| {
                        serde_json::json!({"content": tag, "lstrip": false, "normalized": true,
                                           "rstrip": false, "single_word": false, "special": false})
                    });
                }
            }
        }
        let path = dir.join("tokenizer_config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(config)).unwrap())
            .map_err(|e| Error::io(&path, e))
    }
}

/// A special token of a tokenizer_config.json: a string or `{"content": ..}`.
pub fn special_token(config: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

/// Qwen2/3's pre-tokenizer (as in their tokenizer.json): split by Qwen's regex, which keeps
/// every digit its own piece, then map bytes to byte-level characters.
fn qwen_pre_tokenizer() -> tokenizers::Result<tokenizers::PreTokenizerWrapper> {
    use tokenizers::pre_tokenizers::{byte_level::ByteLevel, sequence::Sequence, split::{Split, SplitPattern}};
    use tokenizers::SplitDelimiterBehavior;
    const QWEN_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let split = Split::new(SplitPattern::Regex(QWEN_SPLIT.into()), SplitDelimiterBehavior::Isolated, false)?;
    let bytes = ByteLevel::new(false, false, false);
    Ok(Sequence::new(vec![split.into(), bytes.into()]).into())
}
