//! Reading parquet files whose schema we do not own (the published releases): each row
//! becomes a JSON value, so importers can accept the variations found in the wild
//! (string or struct columns, large or small types) and name the row and field at fault.
use crate::error::{file, io, Result};
use arrow::array::*;
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};
use std::path::Path;

pub fn value_at(a: &dyn Array, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    macro_rules! prim {
        ($t:ty) => {
            serde_json::json!(a.as_any().downcast_ref::<$t>().unwrap().value(i))
        };
    }
    match a.data_type() {
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => prim!(Int8Array),
        DataType::Int16 => prim!(Int16Array),
        DataType::Int32 => prim!(Int32Array),
        DataType::Int64 => prim!(Int64Array),
        DataType::UInt8 => prim!(UInt8Array),
        DataType::UInt16 => prim!(UInt16Array),
        DataType::UInt32 => prim!(UInt32Array),
        DataType::UInt64 => prim!(UInt64Array),
        DataType::Float32 => prim!(Float32Array),
        DataType::Float64 => prim!(Float64Array),
        DataType::List(_) => {
            let l = a.as_list::<i32>().value(i);
            Value::Array((0..l.len()).map(|j| value_at(l.as_ref(), j)).collect())
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>().value(i);
            Value::Array((0..l.len()).map(|j| value_at(l.as_ref(), j)).collect())
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut m = Map::new();
            for (k, f) in fields.iter().enumerate() {
                m.insert(f.name().clone(), value_at(s.column(k).as_ref(), i));
            }
            Value::Object(m)
        }
        other => Value::String(format!("<unsupported {other}>")),
    }
}

/// Every row of a parquet file as a JSON object keyed by column name.
pub fn parquet_rows(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.build())
        .map_err(|e| file(path, format!("not a valid parquet file: {e}")))?;
    let mut rows = vec![];
    for batch in reader {
        let batch = batch.map_err(|e| file(path, format!("corrupt data: {e}")))?;
        let schema = batch.schema();
        for i in 0..batch.num_rows() {
            let mut m = Map::new();
            for (k, f) in schema.fields().iter().enumerate() {
                m.insert(f.name().clone(), value_at(batch.column(k).as_ref(), i));
            }
            rows.push(m);
        }
    }
    Ok(rows)
}
