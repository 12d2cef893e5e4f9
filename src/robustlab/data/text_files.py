"""Bring your own text data: CSV / TSV / JSON Lines / Parquet / Arrow files and Hugging Face
``datasets`` folders (``save_to_disk``), one text column and one label column.

Labels may be class names (mapped to ids in ``classes`` order, default: sorted names) or integer
ids (a Hugging Face ``ClassLabel`` column gives its names). Bad input is refused with one line
naming the file, the column and the row: a missing column (the available ones are listed), an
empty or missing text or label, bytes instead of text, bytes that are not valid UTF-8 (pass
``encoding: latin-1`` for such files), a label outside ``classes``. Ids are the row number (or
``id_column``); ``meta_columns`` become metadata for slices.

Example::

    d = datasets.create("text-file", {"path": "reviews.csv", "text_column": "review",
                                      "label_column": "stars", "classes": ["bad", "good"]})
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.types import PositiveInt
from robustlab.data.base import Dataset
from robustlab.data.text import subset, text_dataset

FORMATS = ("csv", "tsv", "jsonl", "parquet", "arrow", "hf")
_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".arrow": "arrow"}  # fmt: skip


def _decode(raw: bytes, encoding: str, where: str) -> str:
    try:
        return raw.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{where}: byte 0x{raw[e.start]:02x} on line {line} is not valid {encoding}; "
            f"re-encode the file as UTF-8 or pass encoding: latin-1"
        ) from None
    except LookupError:
        raise ConfigError(f"{where}: unknown encoding {encoding!r}") from None


def _read_jsonl(text: str, where: str) -> list[dict[str, Any]]:
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array of objects
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: invalid JSON on line {e.lineno}: {e.msg}") from None
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{where}: invalid JSON on line {n}: {e.msg}") from None
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise ConfigError(f"{where}: record {n} is a {type(r).__name__}, not an object")
    return rows


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names = list(dict.fromkeys(k for r in rows for k in r if k is not None))
    return {c: [r.get(c) for r in rows] for c in names}


def _arrow(path: Path, fmt: str, where: str) -> dict[str, list[Any]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise ConfigError(
            f"{where}: reading {fmt} files needs pyarrow: pip install pyarrow"
        ) from None
    try:
        if fmt == "parquet":
            return pq.read_table(path).to_pydict()
        with pa.memory_map(str(path)) as src:
            try:
                return pa.ipc.open_stream(src).read_all().to_pydict()
            except pa.ArrowInvalid:
                return pa.ipc.open_file(src).read_all().to_pydict()
    except (pa.ArrowException, OSError) as e:
        raise ConfigError(f"{where}: not a readable {fmt} file ({e})") from None


def _hf(path: Path, split: str | None, label_column: str, where: str) -> tuple[dict, list | None]:
    try:
        from datasets import DatasetDict, load_from_disk
    except ModuleNotFoundError:
        raise ConfigError(f"{where}: Hugging Face folders need `pip install datasets`") from None
    try:
        ds = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{where}: not a Hugging Face datasets folder ({e})") from None
    if isinstance(ds, DatasetDict):
        if split is None and len(ds) == 1:
            split = next(iter(ds))
        if split not in ds:
            raise ConfigError(f"{where}: choose a split with split: one of {sorted(ds)}")
        ds = ds[split]
    feat = ds.features.get(label_column)
    return ds.to_dict(), getattr(feat, "names", None)


def read_table(path: str, fmt: str | None = None, encoding: str = "utf-8",
               split: str | None = None, label_column: str = "label") -> tuple[dict, list | None]:  # fmt: skip
    """The file's columns (name -> values) and, for a ``ClassLabel`` label column, its names."""
    p, where = Path(path), f"text-file {path}"
    if not p.exists():
        raise ConfigError(f"{where}: no such file or folder")
    fmt = fmt or ("hf" if p.is_dir() else _SUFFIX.get(p.suffix.lower()))
    if fmt not in FORMATS:
        raise ConfigError(f"{where}: unknown format {fmt!r}; pass format: one of {list(FORMATS)}")
    if fmt == "hf":
        return _hf(p, split, label_column, where)
    if fmt in ("parquet", "arrow"):
        return _arrow(p, fmt, where), None
    text = _decode(p.read_bytes(), encoding, where)
    if fmt == "jsonl":
        return _columns(_read_jsonl(text, where)), None
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    try:
        rows = list(reader)
        return {c: [r.get(c) for r in rows] for c in reader.fieldnames or []}, None
    except csv.Error as e:
        raise ConfigError(f"{where}: malformed {fmt} on line {reader.line_num}: {e}") from None


def _labels(vals: list[Any], classes: list[str] | None, where: str, col: str) -> tuple[list[int], list[str]]:  # fmt: skip
    for n, v in enumerate(vals, 1):
        if v is None or (isinstance(v, str) and not v.strip()):
            raise ConfigError(f"{where}: row {n} has no label in column {col!r}")
    digits = all(isinstance(v, str) and v.strip().isdigit() for v in vals)
    if digits and not (classes and {v.strip() for v in vals} <= set(classes)):
        vals = [int(v) for v in vals]  # integer ids written as text (CSV)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        k = max(vals, default=-1) + 1
        classes = list(classes) if classes is not None else [str(i) for i in range(k)]
        bad = next((n for n, v in enumerate(vals, 1) if not 0 <= v < len(classes)), None)
        if bad is not None:
            raise ConfigError(f"{where}: row {bad} has label {vals[bad - 1]} outside 0..{len(classes) - 1}")  # fmt: skip
        return list(vals), classes
    names = [str(v).strip() for v in vals]
    classes = list(classes) if classes is not None else sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    for n, v in enumerate(names, 1):
        if v not in index:
            raise ConfigError(f"{where}: row {n} has label {v!r}, not one of classes {classes}")
    return [index[v] for v in names], classes


@datasets.register("text-file")
def text_file(
    path: str,
    text_column: str = "text",
    label_column: str = "label",
    format: str | None = None,
    classes: list[str] | None = None,
    encoding: str = "utf-8",
    split: str | None = None,
    id_column: str | None = None,
    meta_columns: list[str] | None = None,
    limit: PositiveInt | None = None,
    max_words: PositiveInt | None = None,
) -> Dataset:
    """Texts and labels from a CSV/TSV/JSONL/Parquet/Arrow file or a Hugging Face datasets folder."""
    where = f"text-file {path}"
    cols, names = read_table(path, format, encoding, split, label_column)
    if not any(len(v) for v in cols.values()):
        raise ConfigError(f"{where}: holds no rows")
    for c in [text_column, label_column, id_column, *(meta_columns or [])]:
        if c is not None and c not in cols:
            raise ConfigError(f"{where}: no column {c!r} (columns: {', '.join(map(str, cols))})")
    texts = cols[text_column]
    for n, t in enumerate(texts, 1):
        if isinstance(t, bytes | bytearray):
            raise ConfigError(f"{where}: row {n} of column {text_column!r} holds bytes, not text")
        if not isinstance(t, str) or not t.strip():
            raise ConfigError(f"{where}: row {n} has an empty text in column {text_column!r}")
    y, classes = _labels(cols[label_column], classes if classes is not None else names, where, label_column)  # fmt: skip
    ids = list(range(len(texts)))
    if id_column is not None:
        try:
            ids = [int(v) for v in cols[id_column]]
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: id column {id_column!r} must hold integers") from None
    keys = [str(i) for i in ids]
    pos = subset(list(range(len(texts))), keys, limit, "text-file")
    meta = {c: [cols[c][i] for i in pos] for c in meta_columns or []}
    return text_dataset(
        [texts[i] for i in pos], [y[i] for i in pos], classes, name=Path(path).stem,
        ids=[ids[i] for i in pos], meta=meta, max_words=max_words,
    )  # fmt: skip
