"""Single-ability table QA with reasoning (read_tables.py runs first): for each table, the
first rows of one numeric column, their total and the row holding the largest value, as
JSON lines. The Rust side re-adds the listed values before accepting a sample."""


def main():
    out = []
    for f, name, df in frames([]):
        # Measurements, not row ids (unique integers).
        nums = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and df[c].nunique() > 2
                and not (df[c].is_unique and pd.api.types.is_integer_dtype(df[c]))]
        if not nums:
            continue
        head = df.head(8)
        for col in nums[:2]:
            vals = head[col]
            if vals.isna().any():
                continue
            out.append({"file": f, "table": name, "column": str(col), "table_text": head.to_string(index=False),
                        "values": [repr(float(v)) for v in vals], "total": "%.2f" % float(vals.sum()),
                        "argmax_row": int(vals.to_numpy().argmax()) + 1})
    print(json.dumps(out))


main()
