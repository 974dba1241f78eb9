"""Profiles every table (read_tables.py runs first): columns, kinds, missing values,
distributions, candidate keys, and columns shared between tables. Prints one JSON document."""


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
    for f, name, df in frames(skipped):
        cols = [column(df[c]) for c in df.columns]
        keys = [c["name"] for c in cols if c["unique"] == len(df) and c["missing"] == 0]
        tables.append({"file": f, "table": name, "rows": int(len(df)), "columns": cols, "keys": keys, "sep": SEPS.get(f)})
    names = {}
    for t in tables:
        for c in t["columns"]:
            names.setdefault(c["name"], []).append(t["file"] if t["table"] is None else f"{t['file']}:{t['table']}")
    relations = [{"column": n, "tables": ts} for n, ts in sorted(names.items()) if len(set(ts)) > 1]
    print(json.dumps({"tables": tables, "skipped": skipped, "relations": relations}))


main()
