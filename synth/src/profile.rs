//! Table profiles, computed by python/profile.py inside the sandbox (python/read_tables.py
//! reads csv, tsv, xlsx, parquet, json and sqlite with pandas, as the model's code will).
use crate::{Error, Result};
use sandbox::{Limits, Mode, Sandbox, Workspace};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub(crate) const READ_TABLES_PY: &str = include_str!("../python/read_tables.py");
const PROFILE_PY: &str = include_str!("../python/profile.py");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub dtype: String,
    /// numeric | categorical | datetime | text
    pub kind: String,
    pub missing: usize,
    pub unique: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub median: Option<f64>,
    pub integer: Option<bool>,
    pub top: Option<Vec<(String, usize)>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    pub file: String,
    /// The table inside a sqlite file.
    pub table: Option<String>,
    pub rows: usize,
    pub columns: Vec<Column>,
    /// Columns unique and never missing.
    pub keys: Vec<String>,
    /// The delimiter of a text table when it is not a comma (sniffed), as pandas takes it.
    #[serde(default)]
    pub sep: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relation {
    pub column: String,
    pub tables: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub tables: Vec<Table>,
    pub skipped: Vec<Skipped>,
    pub relations: Vec<Relation>,
}

impl Table {
    pub fn numeric(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.kind == "numeric" && c.mean.is_some())
    }
    pub fn categorical(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.kind == "categorical" && c.unique >= 2)
    }
    /// `file` or `file:table`.
    pub fn label(&self) -> String {
        match &self.table {
            Some(t) => format!("{}:{t}", self.file),
            None => self.file.clone(),
        }
    }
}

/// Profiles every data file of a workspace.
pub fn profile(sandbox: &Sandbox, ws: &Workspace) -> Result<Profile> {
    let limits = Limits { timeout: Duration::from_secs(300), max_output_bytes: 64 << 20, ..Limits::default() };
    let ex = sandbox.run_with(ws, &format!("{READ_TABLES_PY}\n{PROFILE_PY}"), Mode::Stateless, &limits);
    if !ex.is_ok() {
        return Err(Error::Profile(ex.observation));
    }
    serde_json::from_str(&ex.observation).map_err(|e| Error::Profile(format!("unreadable profile: {e}")))
}
