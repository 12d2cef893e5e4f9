"""Tokenisation and sparse term-frequency indexes shared by the lexical rankers (BM25, LTR).

A :class:`DocIndex` turns a list of documents into a ``[D, V]`` CSR matrix of term counts over a
growing shared vocabulary; tokens of each distinct text are cached, so re-indexing a candidate list
that differs in one document (a document attack) costs one tokenisation. :class:`IndexCache` keeps
the index of the last few document lists by identity: examples that share one corpus list share one
index.

Example::

    idx = DocIndex.build(["the cat sat", "a dog"], Vocab())
    idx.tf.toarray()  # [[1., 1., 0.], [0., 0., 1.]]: terms cat, sat, dog (stop words dropped)
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric runs, English stop words removed (scikit-learn's list)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [t for t in _TOKEN.findall(text.lower()) if t not in ENGLISH_STOP_WORDS]


class Vocab:
    """Term -> column id, growing on demand; token ids of each distinct text are cached."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self._texts: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (int64, in order, with repeats)."""
        hit = self._texts.get(text)
        if hit is None:
            ids, toks = self.ids, tokenize(text)
            for t in toks:
                if t not in ids:
                    ids[t] = len(ids)
            hit = np.fromiter(map(ids.__getitem__, toks), dtype=np.int64, count=len(toks))
            if len(self._texts) > 200_000:
                self._texts.clear()
            self._texts[text] = hit
        return hit

    def ids_of(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Row of each token and its global term id, for all tokens of ``texts`` (flat)."""
        toks = [self.encode(t) for t in texts]
        lens = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
        cols = np.concatenate(toks) if toks else np.zeros(0, np.int64)
        return np.repeat(np.arange(len(toks)), lens), cols


def _csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Counts of (row, col) pairs as a CSR matrix (duplicates summed, indices sorted)."""
    keys, cnt = np.unique(rows * shape[1] + cols, return_counts=True)
    r, c = np.divmod(keys, shape[1])
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=shape[0]), out=indptr[1:])
    return sp.csr_matrix((cnt.astype(np.float64), c, indptr), shape=shape)


@dataclass
class DocIndex:
    """Term counts ``tf`` ``[D, T]`` over the list's own terms ``terms`` (sorted global ids),
    document lengths and document frequencies ``df`` ``[T]``."""

    tf: sp.csr_matrix
    doc_len: np.ndarray
    df: np.ndarray
    terms: np.ndarray
    vocab: Vocab

    @classmethod
    def build(cls, docs: Sequence[str], vocab: Vocab) -> DocIndex:
        rows, cols = vocab.ids_of(docs)
        terms, local = np.unique(cols, return_inverse=True)
        tf = _csr(rows, local.reshape(-1), (len(docs), len(terms)))
        doc_len = np.bincount(rows, minlength=len(docs)).astype(np.float64)
        df = np.bincount(tf.indices, minlength=len(terms)).astype(np.float64)
        return cls(tf, doc_len, df, terms, vocab)

    def queries(self, queries: Sequence[str]) -> sp.csr_matrix:
        """Query term counts ``[Q, T]`` over this index's terms (other terms are dropped)."""
        rows, cols = self.vocab.ids_of(queries)
        at = np.searchsorted(self.terms, cols)
        ok = at < len(self.terms)
        ok[ok] = self.terms[at[ok]] == cols[ok]
        return _csr(rows[ok], at[ok], (len(queries), len(self.terms)))


class IndexCache:
    """Derived per-document-list data, cached by the list's identity (LRU of ``size`` lists)."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._items: OrderedDict[int, tuple[Any, Any]] = OrderedDict()

    def get(self, docs: Sequence[str], build: Any) -> Any:
        key = id(docs)
        hit = self._items.get(key)
        if hit is not None and hit[0] is docs:
            self._items.move_to_end(key)
            return hit[1]
        value = build(docs)
        self._items[key] = (docs, value)  # holding ``docs`` keeps its id from being reused
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value
