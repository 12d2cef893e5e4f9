"""Shared core of the ``transformers`` adapters: a local model folder, its tokenizer, truncation
that is recorded (never a crash), length-sorted batches and a per-text result cache.

Subclasses set ``auto`` (the ``transformers`` auto class name) and ``padding_side``; see
:mod:`robustlab.models.hf_classifier` and :mod:`robustlab.models.hf_lm`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.types import Capabilities, Domain
from robustlab.models.hf_local import (
    LRU,
    fingerprint,
    load_kwargs,
    load_tokenizer,
    local_dir,
    quiet,
)
from robustlab.models.text_embedding import check_texts


@dataclass
class Encoded:
    """A tokenized batch: model inputs (padded, truncated) and, per text, whether it was truncated
    and how many tokens it had before truncation."""

    inputs: dict[str, torch.Tensor]
    truncated: list[bool]
    n_tokens: list[int]


class HFTextModel:
    """A ``transformers`` model + tokenizer from a local ``save_pretrained`` folder (CPU default)."""

    auto = "AutoModel"
    padding_side = "right"
    truncation_side = "right"

    def __init__(
        self,
        path: str,
        *,
        max_length: int | None = None,
        batch_size: int = 16,
        cache_size: int = 50_000,
        allow_pickle: bool = False,
        device: str | None = None,
        name: str = "hf",
    ) -> None:
        import transformers

        self.name = name
        self.path = local_dir(path, name, allow_pickle=allow_pickle)
        if batch_size < 1 or cache_size < 0:
            raise ConfigError(f"{name}: batch_size must be >= 1 and cache_size >= 0")
        self.tokenizer = load_tokenizer(self.path, name)
        self.tokenizer.padding_side = self.padding_side
        self.tokenizer.truncation_side = self.truncation_side
        if self.tokenizer.pad_token is None:  # GPT-style tokenizers: pad with end-of-text
            if self.tokenizer.eos_token is None:
                raise ConfigError(f"{name}: the tokenizer has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            cls = getattr(transformers, self.auto)
            with quiet():
                self.net = cls.from_pretrained(str(self.path), **load_kwargs(self.path)).eval()
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(
                f"{name}: cannot load a {self.auto} from {self.path}: {e}"[:500]
            ) from None
        if getattr(self.net.config, "pad_token_id", None) is None:  # e.g. GPT-2 classifiers
            self.net.config.pad_token_id = self.tokenizer.pad_token_id  # find the last token
        self.device = torch.device(device) if device else torch.device("cpu")
        self.net.to(self.device)
        for p in self.net.parameters():
            p.requires_grad_(False)
        limit = _model_limit(self.net.config, self.tokenizer)
        if max_length is not None and max_length < 2:
            raise ConfigError(f"{name}: max_length must be >= 2, got {max_length}")
        self.max_length = min(max_length or limit, limit)
        self.batch_size = batch_size
        self.cache = LRU(cache_size)
        self.domain = Domain(-float("inf"), float("inf"))  # inputs are texts, not tensors
        self.capabilities = Capabilities(grad=True, batch=True, probs_only=False)
        self.last_extra: dict[str, list[Any]] = {}

    # tokenization ----------------------------------------------------------------------------
    def tokens(self, texts: Sequence[str], max_length: int | None = None) -> Encoded:
        """Tokenize a batch at ``max_length`` (default: the model's), recording truncation."""
        limit = max_length or self.max_length
        tok = self.tokenizer
        full = tok(list(texts), truncation=False, padding=False, verbose=False)["input_ids"]
        n = [len(ids) for ids in full]
        enc = tok(list(texts), truncation=True, max_length=limit, padding=True,
                  return_tensors="pt")  # fmt: skip
        inputs = {k: v.to(self.device) for k, v in enc.items() if k in _INPUTS}
        return Encoded(inputs, [k > limit for k in n], n)

    def batches(self, texts: Sequence[str]) -> Iterator[list[int]]:
        """Positions of ``texts`` in batches of similar length (less padding)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for s in range(0, len(order), self.batch_size):
            yield order[s : s + self.batch_size]

    def cached(self, x: Any, compute: Any, tag: Hashable = None) -> list[Any]:
        """Per-text results, computing (in length-sorted batches) only the texts not in the cache
        under ``tag`` (the request's other parameters); ``compute(texts) -> list of results``."""
        texts = check_texts(x, self.name)
        todo = [k[1] for k in self.cache.split([(tag, t) for t in texts])]  # type: ignore[index]
        new: dict[str, Any] = {}
        for idx in self.batches(todo):
            batch = [todo[i] for i in idx]
            new.update(zip(batch, compute(batch), strict=True))
        out = [new[t] if t in new else self.cache.get((tag, t)) for t in texts]
        for t, v in new.items():
            self.cache.put((tag, t), v)
        return out

    def fingerprint(self) -> str:
        return fingerprint(self.path, f"{type(self).__name__}|{self.max_length}")


_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _model_limit(config: Any, tokenizer: Any) -> int:
    """The longest input the model takes: its position embeddings (or the tokenizer's limit)."""
    cands = [getattr(config, k, None) for k in ("max_position_embeddings", "n_positions")]
    tok_max = getattr(tokenizer, "model_max_length", None)
    cands.append(tok_max if isinstance(tok_max, int) and tok_max < 10**6 else None)
    known = [c for c in cands if isinstance(c, int) and c > 0]
    return min(known) if known else 512
