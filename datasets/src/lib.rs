//! The `datasets` crate: every record that flows between stages lives in parquet shards
//! with a manifest; importers bring the published formats in; samples are tokenized with
//! the checkpoint's tokenizer and template into ids and loss masks, packed without
//! padding waste, and served by a deterministic, resumable loader.
mod arrow_json;
pub mod error;
pub mod import;
pub mod loader;
pub mod pack;
pub mod records;
pub mod shards;
pub mod tokenize;

pub use error::{Error, Result};
pub use loader::{Cursor, Loader, Source};
pub use pack::{pack, Overlong, PackConfig, PackReport, PackedSeq};
pub use records::{Message, Record, RlTask, Rollout, SftSample, Trajectory};
pub use shards::{read_all, read_shard, Manifest, ShardWriter};
pub use tokenize::{SampleTokenizer, Tokenized};
