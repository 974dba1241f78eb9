use std::path::PathBuf;

/// Every error names the file and, where there is one, the row and field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: row {row}: field `{field}`: {reason}")]
    Row { path: PathBuf, row: usize, field: String, reason: String },
    #[error("{0}")]
    Model(#[from] model::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source }
}

pub(crate) fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> Error {
    Error::File { path: path.to_path_buf(), reason: reason.to_string() }
}
