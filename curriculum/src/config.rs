//! TOML configs: every struct is `deny_unknown_fields`, so a typo is an error naming the
//! key and its line; `--set a.b=value` edits the document before it is read (untouched
//! keys keep their lines).
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use std::path::Path;
use toml_edit::{DocumentMut, Item, Table, Value};

pub fn load_toml<T: DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config { path: name.clone(), reason: e.to_string() })?;
    let text = apply_overrides(&text, overrides).map_err(|reason| Error::Config { path: name.clone(), reason })?;
    toml::from_str(&text).map_err(|e: toml::de::Error| {
        // The line number and the line itself, so a bad value's field is named too.
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start].lines().count().max(1) + usize::from(text[..s.start].ends_with('\n'));
                format!("line {line} (`{}`): ", text.lines().nth(line - 1).unwrap_or("").trim())
            })
            .unwrap_or_default();
        Error::Config { path: name, reason: format!("{at}{}", e.message().trim_end().replace('\n', "; ")) }
    })
}

/// Sets each `key.path=value` (value read as TOML, else as a string) in the document.
fn apply_overrides(text: &str, overrides: &[String]) -> std::result::Result<String, String> {
    if overrides.is_empty() {
        return Ok(text.to_string());
    }
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| e.to_string())?;
    for o in overrides {
        let (key, raw) = o.split_once('=').ok_or_else(|| format!("--set {o}: expected key=value"))?;
        let value: Value = raw.trim().parse().unwrap_or_else(|_| Value::from(raw.trim()));
        let parts: Vec<&str> = key.trim().split('.').collect();
        let mut table: &mut Table = doc.as_table_mut();
        for p in &parts[..parts.len() - 1] {
            let entry = table.entry(p).or_insert_with(|| Item::Table(Table::new()));
            table = entry.as_table_mut().ok_or_else(|| format!("--set {o}: `{p}` is not a table"))?;
        }
        table.insert(parts[parts.len() - 1], Item::Value(value));
    }
    Ok(doc.to_string())
}
