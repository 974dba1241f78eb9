"""Profiles every data file in the current folder: tables (a sqlite file has several),
columns, kinds, missing values, distributions, candidate keys, and columns shared between
tables. Prints one JSON document. Unreadable, empty or one-column tables are reported as
skipped with a reason instead of failing the run."""
import json
import os
import sqlite3

import pandas as pd

READERS = {
    ".csv": lambda f: {None: pd.read_csv(f)},
    ".tsv": lambda f: {None: pd.read_csv(f, sep="\t")},
    ".xlsx": lambda f: {None: pd.read_excel(f)},
    ".parquet": lambda f: {None: pd.read_parquet(f)},
    ".json": lambda f: {None: pd.read_json(f)},
    ".sqlite": lambda f: read_sqlite(f),
    ".db": lambda f: read_sqlite(f),
}


def read_sqlite(f):
    con = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
    names = [r[0] for r in con.execute("select name from sqlite_master where type='table' order by name")]
    if not names:
        raise ValueError("the database has no tables")
    out = {n: pd.read_sql(f'select * from "{n}"', con) for n in names}
    con.close()
    return out


def kind(s):
    if pd.api.types.is_bool_dtype(s):
        return "categorical"
    if pd.api.types.is_numeric_dtype(s):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    return "categorical" if s.nunique(dropna=True) <= max(20, len(s) // 10) else "text"


def column(s):
    k = kind(s)
    c = {"name": str(s.name), "dtype": str(s.dtype), "kind": k, "missing": int(s.isna().sum()),
         "unique": int(s.nunique(dropna=True))}
    if k == "numeric":
        d = s.dropna().astype(float)
        if len(d):
            c.update(mean=float(d.mean()), std=float(d.std()) if len(d) > 1 else 0.0, min=float(d.min()),
                     max=float(d.max()), median=float(d.median()), integer=bool((d == d.round()).all()))
    elif k == "categorical":
        c["top"] = [[str(v), int(n)] for v, n in s.value_counts().head(5).items()]
    return c


def main():
    tables, skipped = [], []
    for f in sorted(os.listdir(".")):
        ext = os.path.splitext(f)[1].lower()
        if f.startswith(".") or ext not in READERS:
            if not f.startswith("."):
                skipped.append({"file": f, "reason": f"unsupported file type `{ext or f}`"})
            continue
        try:
            frames = READERS[ext](f)
        except UnicodeDecodeError as e:
            skipped.append({"file": f, "reason": f"not UTF-8 text: {e.reason} at byte {e.start}"})
            continue
        except Exception as e:
            skipped.append({"file": f, "reason": f"unreadable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            continue
        for name, df in frames.items():
            where = f if name is None else f"{f}:{name}"
            if len(df) == 0:
                skipped.append({"file": where, "reason": "empty table"})
                continue
            if df.shape[1] < 2:
                skipped.append({"file": where, "reason": "only one column"})
                continue
            cols = [column(df[c]) for c in df.columns]
            keys = [c["name"] for c in cols if c["unique"] == len(df) and c["missing"] == 0]
            tables.append({"file": f, "table": name, "rows": int(len(df)), "columns": cols, "keys": keys})
    names = {}
    for t in tables:
        for c in t["columns"]:
            names.setdefault(c["name"], []).append(t["file"] if t["table"] is None else f"{t['file']}:{t['table']}")
    relations = [{"column": n, "tables": ts} for n, ts in sorted(names.items()) if len(set(ts)) > 1]
    print(json.dumps({"tables": tables, "skipped": skipped, "relations": relations}))


main()
