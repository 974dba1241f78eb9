//! One error type for everything the model crate reads: each variant names the file and
//! the field or tensor at fault, so a user can fix the input without a debugger.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: field `{field}`: {reason}")]
    Config { path: PathBuf, field: String, reason: String },
    #[error("{path}: tensor `{tensor}`: {reason}")]
    Tensor { path: PathBuf, tensor: String, reason: String },
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("chat template {source_name}: {reason}")]
    Template { source_name: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn config(path: &std::path::Path, field: &str, reason: impl Into<String>) -> Self {
        Error::Config { path: path.to_path_buf(), field: field.to_string(), reason: reason.into() }
    }
    pub(crate) fn tensor(path: &std::path::Path, tensor: &str, reason: impl Into<String>) -> Self {
        Error::Tensor { path: path.to_path_buf(), tensor: tensor.to_string(), reason: reason.into() }
    }
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}
