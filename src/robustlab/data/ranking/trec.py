"""TREC-format loaders (topics, qrels, runs) and JSONL corpora, and the ``trec`` dataset.

Formats: qrels ``qid iter docid grade``; runs ``qid Q0 docid rank score tag``; topics as TSV
``qid<TAB>text`` or TREC SGML (``<num> Number: 301`` ... ``<title> ...``); corpora as JSONL lines
``{"_id"|"id"|"docid": ..., "title": ..., "text": ...}`` (BEIR layout) or TSV ``docid<TAB>text``.
Bring MS MARCO, BEIR or your own collection::

    data = datasets.create("trec", {"topics": "q.tsv", "qrels": "qrels.txt",
                                     "corpus": "corpus.jsonl", "run": "bm25.run", "depth": 100})
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.types import PositiveInt
from robustlab.data.base import Dataset
from robustlab.data.ranking import build_examples


def _lines(path: str | Path, what: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {str(path)!r} does not exist")
    return p.read_text(encoding="utf-8", errors="replace").splitlines()


def read_qrels(path: str | Path) -> dict[str, dict[str, float]]:
    """``{qid: {docid: grade}}`` from a TREC qrels file."""
    out: dict[str, dict[str, float]] = {}
    for n, line in enumerate(_lines(path, "qrels"), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise ConfigError(f"{path}:{n}: qrels lines need 4 fields 'qid iter docid grade'")
        out.setdefault(parts[0], {})[parts[2]] = float(parts[3])
    return out


def read_run(path: str | Path, depth: int | None = None) -> dict[str, list[str]]:
    """``{qid: [docid, ...]}`` by descending score (ties by rank) from a TREC run file."""
    rows: dict[str, list[tuple[float, int, str]]] = {}
    for n, line in enumerate(_lines(path, "run"), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise ConfigError(f"{path}:{n}: run lines need 6 fields 'qid Q0 docid rank score tag'")
        rows.setdefault(parts[0], []).append((-float(parts[4]), int(parts[3]), parts[2]))
    return {q: [d for *_, d in sorted(r)][:depth] for q, r in rows.items()}


def read_topics(path: str | Path) -> dict[str, str]:
    """``{qid: query}`` from TSV ``qid<TAB>text`` or TREC SGML topics (title field)."""
    text = "\n".join(_lines(path, "topics"))
    if "<top>" in text:
        out = {}
        for top in re.findall(r"<top>(.*?)</top>", text, flags=re.S):
            num = re.search(r"<num>\s*(?:Number:)?\s*(\S+)", top)
            title = re.search(r"<title>\s*(?:Topic:)?\s*(.*?)\s*(?:<|$)", top, flags=re.S)
            if num and title:
                out[num.group(1)] = " ".join(title.group(1).split())
        return out
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if "\t" not in line:
                raise ConfigError(f"{path}:{n}: topic lines need 'qid<TAB>text'")
            qid, q = line.split("\t", 1)
            out[qid.strip()] = q.strip()
    return out


def read_corpus(path: str | Path) -> tuple[list[str], list[str]]:
    """``(doc_ids, texts)`` from a JSONL (BEIR) or TSV corpus; title and text are joined."""
    ids, texts = [], []
    for n, line in enumerate(_lines(path, "corpus"), 1):
        if not line.strip():
            continue
        if str(path).endswith((".jsonl", ".json")):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{n}: not JSON ({e.msg})") from None
            did = rec.get("_id", rec.get("id", rec.get("docid")))
            if did is None:
                raise ConfigError(f"{path}:{n}: a corpus record needs '_id', 'id' or 'docid'")
            body = " ".join(str(rec.get(k) or "") for k in ("title", "text", "contents"))
            ids.append(str(did))
            texts.append(body.strip())
        else:
            did, _, body = line.partition("\t")
            ids.append(did.strip())
            texts.append(body.strip())
    return ids, texts


@datasets.register("trec")
def trec(
    topics: str, qrels: str, corpus: str, run: str | None = None, depth: PositiveInt = 100
) -> Dataset:
    """A TREC/BEIR-style collection: topics + qrels + corpus (+ a first-stage run to re-rank)."""
    doc_ids, texts = read_corpus(corpus)
    queries = read_topics(topics)
    cands = read_run(run, depth) if run else None
    return build_examples(
        queries, read_qrels(qrels), doc_ids, texts, cands, name=Path(topics).stem,
        meta={"qid": list(queries)},
    )  # fmt: skip
