//! Parquet shards: a folder of size-bounded `part-NNNNN.parquet` files and a
//! `_manifest.json` (kind, counts, sha256 of every shard). Each shard is written under a
//! temporary name, synced and renamed, and the manifest is rewritten (the same way) after
//! every shard: a crash leaves complete shards listed and nothing half-written that looks
//! whole. Readers check the manifest, the checksums and the schema, and name the file,
//! row and field at fault.
use crate::error::{file, io, Error, Result};
use crate::records::Record;
use arrow::array::{Array, RecordBatch, StructArray};
use arrow::datatypes::{DataType, FieldRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use serde_arrow::schema::{SchemaLike, TracingOptions};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// Leading underscore: pyarrow, pandas, polars and duckdb skip it when reading the folder.
pub const MANIFEST: &str = "_manifest.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub rows: usize,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: String,
    pub rows: usize,
    pub shards: Vec<ShardInfo>,
    /// Column name and type, for people reading the folder.
    pub schema: Vec<(String, String)>,
    /// False until the writer finished: a crashed run's folder says so.
    pub complete: bool,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| file(&path, format!("invalid manifest: {e}")))
    }
}

/// The Arrow fields of a record type.
pub fn fields_of<R: Record>() -> Vec<FieldRef> {
    Vec::<FieldRef>::from_type::<R>(TracingOptions::default().allow_null_fields(true))
        .expect("record types are traceable")
}

/// A canonical type name: large/view variants and list item names do not matter.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
            format!("list<{}>", type_name(f.data_type()))
        }
        DataType::Struct(fs) => {
            let inner: Vec<String> = fs.iter().map(|f| format!("{}: {}", f.name(), type_name(f.data_type()))).collect();
            format!("struct<{}>", inner.join(", "))
        }
        other => format!("{other}").to_lowercase(),
    }
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `bytes` to `path` via a temporary file, fsync and rename.
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    write(&mut f).and_then(|_| f.sync_all()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

pub struct ShardWriter<R: Record> {
    dir: PathBuf,
    fields: Vec<FieldRef>,
    buf: Vec<R>,
    buf_bytes: usize,
    max_shard_bytes: usize,
    manifest: Manifest,
    _r: PhantomData<R>,
}

impl<R: Record> ShardWriter<R> {
    /// Shards of about `max_shard_bytes` (uncompressed, estimated) each in `dir`, which
    /// must not hold shards already.
    pub fn create(dir: &Path, max_shard_bytes: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        if dir.join(MANIFEST).exists() {
            return Err(file(&dir.join(MANIFEST), "this folder already holds shards; write to a new one"));
        }
        let fields = fields_of::<R>();
        let schema = fields.iter().map(|f| (f.name().clone(), type_name(f.data_type()))).collect();
        let manifest = Manifest { kind: R::KIND.into(), rows: 0, shards: vec![], schema, complete: false };
        let w = Self { dir: dir.into(), fields, buf: vec![], buf_bytes: 0, max_shard_bytes, manifest, _r: PhantomData };
        w.write_manifest()?;
        Ok(w)
    }

    pub fn write(&mut self, record: R) -> Result<()> {
        self.buf_bytes += serde_json::to_vec(&record).map(|v| v.len()).unwrap_or(0);
        self.buf.push(record);
        if self.buf_bytes >= self.max_shard_bytes {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let name = format!("part-{:05}.parquet", self.manifest.shards.len());
        let path = self.dir.join(&name);
        let batch = serde_arrow::to_record_batch(&self.fields, &self.buf).map_err(|e| file(&path, e))?;
        write_atomic(&path, |f| {
            let mut w = ArrowWriter::try_new(f, batch.schema(), None).map_err(std::io::Error::other)?;
            w.write(&batch).map_err(std::io::Error::other)?;
            w.close().map(|_| ()).map_err(std::io::Error::other)
        })?;
        let bytes = std::fs::metadata(&path).map_err(|e| io(&path, e))?.len();
        let info = ShardInfo { file: name, rows: self.buf.len(), bytes, sha256: sha256_of(&path)? };
        self.manifest.rows += info.rows;
        self.manifest.shards.push(info);
        self.buf.clear();
        self.buf_bytes = 0;
        self.write_manifest()
    }

    fn write_manifest(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.manifest).unwrap();
        write_atomic(&self.dir.join(MANIFEST), |f| f.write_all(text.as_bytes()))
    }

    /// Writes what is buffered and marks the manifest complete.
    pub fn finish(mut self) -> Result<Manifest> {
        self.flush()?;
        self.manifest.complete = true;
        self.write_manifest()?;
        Ok(self.manifest.clone())
    }
}

/// All records of a shard folder (or of one parquet file), validated.
pub fn read_all<R: Record>(path: &Path) -> Result<Vec<R>> {
    let mut out = vec![];
    for shard in shard_files::<R>(path)? {
        out.extend(read_shard::<R>(&shard)?);
    }
    Ok(out)
}

/// The shard files of a folder (after checking its manifest and checksums), or the file itself.
pub fn shard_files<R: Record>(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let m = Manifest::read(path)?;
    let mpath = path.join(MANIFEST);
    if m.kind != R::KIND {
        return Err(Error::Row { path: mpath, row: 0, field: "kind".into(), reason: format!("holds `{}` records, expected `{}`", m.kind, R::KIND) });
    }
    if !m.complete {
        return Err(file(&mpath, "incomplete: the writer did not finish (its complete shards are still listed)"));
    }
    let mut out = vec![];
    for s in &m.shards {
        let p = path.join(&s.file);
        let bytes = std::fs::metadata(&p).map_err(|e| io(&p, e))?.len();
        if bytes != s.bytes || sha256_of(&p)? != s.sha256 {
            return Err(file(&p, format!("does not match its checksum in {MANIFEST} (truncated or changed)")));
        }
        out.push(p);
    }
    Ok(out)
}

/// One parquet file's records, checking every expected column's presence, type and nulls.
pub fn read_shard<R: Record>(path: &Path) -> Result<Vec<R>> {
    let f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| file(path, format!("not a valid parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let expected = fields_of::<R>();
    for want in &expected {
        let Ok(got) = schema.field_with_name(want.name()) else {
            return Err(file(path, format!("field `{}` missing (a `{}` shard needs it)", want.name(), R::KIND)));
        };
        if type_name(got.data_type()) != type_name(want.data_type()) {
            return Err(file(path, format!("field `{}` is {}, expected {}", want.name(), type_name(got.data_type()), type_name(want.data_type()))));
        }
    }
    let reader = builder.build().map_err(|e| file(path, e))?;
    let mut out = vec![];
    for batch in reader {
        let batch: RecordBatch = batch.map_err(|e| file(path, format!("corrupt data: {e}")))?;
        for want in expected.iter().filter(|f| !f.is_nullable()) {
            let col = batch.column_by_name(want.name()).unwrap();
            if col.null_count() > 0 {
                let row = (0..col.len()).find(|&i| col.is_null(i)).unwrap();
                return Err(Error::Row { path: path.into(), row: out.len() + row, field: want.name().clone(), reason: "null, but required".into() });
            }
        }
        let projected = RecordBatch::from(StructArray::from(batch.clone()));
        let rows: Vec<R> = serde_arrow::from_record_batch(&projected).map_err(|e| file(path, format!("rows {}..: {e}", out.len())))?;
        out.extend(rows);
    }
    Ok(out)
}
