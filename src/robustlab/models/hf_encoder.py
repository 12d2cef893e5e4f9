"""A sentence-transformers encoder from a local folder, behind the bi-encoder ranker interface.

``hf-encoder`` reads a folder saved by ``SentenceTransformer.save`` (``modules.json``: a
Transformer, a Pooling and optionally a Normalize module) and serves it as a
:class:`~robustlab.models.rankers.dense.DenseRanker` -- ``scores(query, docs)``, cached document
embeddings, ``encode(texts)`` for embedding classifiers and ``embed`` (differentiable in the input
embeddings, for HotFlip) -- running the network through ``transformers`` with the folder's pooling
(mean, CLS or max over tokens) and normalisation; embeddings match sentence-transformers'
``encode`` (tests). The bundled ``minilm`` (all-MiniLM-L6-v2) is loaded through this class.
Texts are cut at ``max_length`` tokens (default: the folder's ``max_seq_length``).

Example::

    enc = models.create("hf-encoder", {"path": "/models/my-sbert"})
    enc.encode(["Oil prices rose."]).shape      # [1, D]
    enc.scores("oil", ["Oil prices rose.", "A football match."])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.core.types import PositiveInt
from robustlab.models.hf_local import fingerprint, local_dir, quiet
from robustlab.models.rankers.dense import DenseRanker

POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
           "pooling_mode_max_tokens": "max"}  # fmt: skip


def read_modules(p: Path, what: str) -> tuple[Path, str, bool, int | None]:
    """(transformer folder, pooling mode, normalize, max_seq_length) of a sentence-transformers
    folder; a folder without ``modules.json`` is read as mean pooling + normalisation."""
    f = p / "modules.json"
    if not f.is_file():
        return p, "mean", True, _max_length(p)
    mods = json.loads(f.read_text())
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in mods]
    extra = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if extra or kinds[:2] != ["Transformer", "Pooling"]:
        raise ConfigError(f"{what}: unsupported sentence-transformers modules {kinds} in {p} "
                          "(supported: Transformer, Pooling, optional Normalize)")  # fmt: skip
    root = p / mods[0].get("path", "")
    cfg = json.loads((p / mods[1]["path"] / "config.json").read_text())
    modes = [v for k, v in POOLING.items() if cfg.get(k)]  # sentence-transformers < 6: flags
    if isinstance(cfg.get("pooling_mode"), str):  # >= 6: one name
        modes.append(cfg["pooling_mode"])
    others = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and k not in POOLING]
    if len(modes) != 1 or modes[0] not in POOLING.values() or others:
        raise ConfigError(f"{what}: unsupported pooling {cfg} (one of mean, cls, max)")
    return root, modes[0], "Normalize" in kinds, _max_length(root)


def _max_length(root: Path) -> int | None:
    """The folder's sequence limit: ``max_seq_length`` (sentence-transformers < 6) or the
    tokenizer's ``model_max_length`` (>= 6), capped by the position embeddings."""
    known = []
    for name, key in (("sentence_bert_config.json", "max_seq_length"),
                      ("tokenizer_config.json", "model_max_length"),
                      ("config.json", "max_position_embeddings")):  # fmt: skip
        f = root / name
        v = json.loads(f.read_text()).get(key) if f.is_file() else None
        if isinstance(v, int) and 0 < v < 10**6:
            known.append(v)
            if name == "sentence_bert_config.json":
                break
    return min(known) if known else None


class SentenceTransformerEncoder(DenseRanker):
    """A sentence-transformers folder (Transformer + Pooling [+ Normalize]) as a bi-encoder."""

    def __init__(self, path: str, max_length: int | None = None, batch_size: int = 32,
                 disk_cache: bool = True, allow_pickle: bool = False) -> None:  # fmt: skip
        p = local_dir(path, "hf-encoder", allow_pickle=allow_pickle)
        root, self.pooling, self.normalize, st_max = read_modules(p, "hf-encoder")
        if root != p:
            local_dir(root, "hf-encoder", allow_pickle=allow_pickle)
        with quiet():
            super().__init__(str(root), max_length or st_max or 256, batch_size, disk_cache)
        self.folder = p

    def embed(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
              inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Pooled (and, if the folder normalises, L2-normalised) embeddings ``[B, D]``."""
        if self.pooling == "mean" and self.normalize:
            return super().embed(input_ids, attention_mask, inputs_embeds)
        out = self.net(input_ids=input_ids, attention_mask=attention_mask,
                       inputs_embeds=inputs_embeds).last_hidden_state  # fmt: skip
        m = attention_mask.unsqueeze(-1).to(out.dtype)
        if self.pooling == "cls":
            pooled = out[:, 0]
        elif self.pooling == "max":
            pooled = out.masked_fill(m == 0, -1e9).amax(1)
        else:
            pooled = (out * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``texts`` (no cache): tokenized once, batched by token count (less
        padding than sorting by characters), padded per batch, ``inference_mode``."""
        dim = self.net.config.hidden_size
        if not len(texts):
            return torch.zeros(0, dim)
        tok = self.tokenizer
        ids = tok(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = torch.empty(len(ids), dim)
        pad = tok.pad_token_id or 0
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                rows = [torch.tensor(ids[i]) for i in idx]
                x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad)
                mask = torch.nn.utils.rnn.pad_sequence(
                    [torch.ones_like(r) for r in rows], batch_first=True
                )
                out[idx] = self.embed(x, mask)
        self.encoded += len(texts)
        return out

    def fingerprint(self) -> str:
        if self.pooling == "mean" and self.normalize:  # as DenseRanker (runs stay comparable)
            return super().fingerprint()
        return fingerprint(self.folder, f"{self.pooling}|{self.normalize}|{self.max_length}")


@models.register("hf-encoder")
def hf_encoder(
    path: str,
    max_length: PositiveInt | None = None,
    batch_size: PositiveInt = 32,
    disk_cache: bool = True,
    allow_pickle: bool = False,
) -> Any:
    """A local sentence-transformers encoder (``SentenceTransformer.save`` folder) as a ranker."""
    return SentenceTransformerEncoder(path, max_length, batch_size, disk_cache, allow_pickle)
