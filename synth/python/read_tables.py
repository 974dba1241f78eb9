"""Reads every data file in the current folder the way the model's code will (pandas;
a sqlite file holds several tables). Unreadable, empty or one-column tables, non-UTF-8
text and table-less databases become skip entries with a reason, never an exception."""
import json
import os
import sqlite3

import pandas as pd

SEPS = {}  # file -> the delimiter sniffed when it is not a comma


def read_csv(f):
    df = pd.read_csv(f)
    if df.shape[1] == 1:  # tab- or space-separated under a .csv name: sniff the delimiter
        import csv
        try:
            with open(f, newline="") as fh:
                sep = csv.Sniffer().sniff(fh.read(65536), delimiters="\t;| ").delimiter
        except csv.Error:  # truly one column
            sep = ","
        if sep != ",":
            other = pd.read_csv(f, sep=r"\s+" if sep == " " else sep)
            if other.shape[1] > 1:
                SEPS[f] = r"\s+" if sep == " " else sep
                return {None: other}
    return {None: df}


READERS = {
    ".csv": lambda f: read_csv(f),
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



def frames(skipped):
    """Yields (file, table name or None, DataFrame); appends skip reasons to `skipped`."""
    for f in sorted(os.listdir(".")):
        ext = os.path.splitext(f)[1].lower()
        if f.startswith(".") or ext not in READERS:
            if not f.startswith("."):
                skipped.append({"file": f, "reason": f"unsupported file type `{ext or f}`"})
            continue
        try:
            tables = READERS[ext](f)
        except UnicodeDecodeError as e:
            skipped.append({"file": f, "reason": f"not UTF-8 text: {e.reason} at byte {e.start}"})
            continue
        except Exception as e:
            skipped.append({"file": f, "reason": f"unreadable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            continue
        for name, df in tables.items():
            where = f if name is None else f"{f}:{name}"
            if len(df) == 0:
                skipped.append({"file": where, "reason": "empty table"})
            elif df.shape[1] < 2:
                skipped.append({"file": where, "reason": "only one column"})
            else:
                yield f, name, df
