"""Text classifier over a frozen sentence encoder: ``logits = head(encoder(texts))``.

:class:`TextEmbeddingClassifier` embeds a batch of texts with a sentence encoder (any object with
``encode(texts) -> [B, D]`` and ``fingerprint()``, e.g. all-MiniLM-L6-v2 via
:class:`robustlab.models.rankers.dense.DenseRanker`; Reimers & Gurevych, 2019) and applies a torch
head (a linear layer for ``minilm-logreg``). Embeddings of texts already seen are kept in memory
(attacks score the same texts many times); the encoder runs once per batch of new texts, sorted by
length. It is black-box for text attacks (``grad=False``: no gradient with respect to words).

Example::

    clf = models.create("minilm-logreg", {"dataset": "bbc-news"})
    clf.logits(["Shares in Vodafone rose after strong results."]).argmax(1)   # business
    clf.embed(["..."]).shape                                                  # [1, 384]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from robustlab.core.errors import ConfigError
from robustlab.core.rng import seeded
from robustlab.core.types import Capabilities, Domain
from robustlab.models.base import hash_tensors


def check_texts(x: Any, name: str) -> list[str]:
    """``x`` as a list of non-empty str, or a :class:`ConfigError` naming the first bad entry."""
    if isinstance(x, str) or not isinstance(x, Sequence):
        raise ConfigError(f"{name} needs a list of texts, got {type(x).__name__}")
    for i, t in enumerate(x):
        if isinstance(t, bytes | bytearray):
            raise ConfigError(f"{name}: text {i} is bytes; decode it to str first")
        if not isinstance(t, str):
            raise ConfigError(f"{name}: text {i} is a {type(t).__name__}, not a str")
        if not t.strip():
            raise ConfigError(f"{name}: text {i} is empty")
    return list(x)


class TextEmbeddingClassifier:
    """Frozen sentence encoder + trainable head; ``logits(list[str]) -> [B, num_classes]``."""

    def __init__(
        self,
        encoder: Any,
        head: nn.Module,
        num_classes: int,
        classes: list[str] | None = None,
        name: str = "text-embedding",
        cache_size: int = 50_000,
    ) -> None:
        self.encoder, self.head = encoder, head.eval()
        self.num_classes, self.classes, self.name = num_classes, classes, name
        self.cache_size = cache_size
        self.domain = Domain(-float("inf"), float("inf"))  # inputs are texts, not tensors
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=False)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.encoded = 0  # texts run through the encoder (not served from the cache)

    def embed(self, x: Sequence[str]) -> torch.Tensor:
        """``[B, D]`` sentence embeddings (cached per distinct text, LRU of ``cache_size``)."""
        texts = check_texts(x, self.name)
        new = sorted({t for t in texts if t not in self._cache})
        if new:
            emb = self.encoder.encode(new)
            self.encoded += len(new)
            self._cache.update(zip(new, emb, strict=True))
        for t in texts:
            self._cache.move_to_end(t)
        out = torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0, 1)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def logits(self, x: Sequence[str]) -> torch.Tensor:
        """``[B, num_classes]`` logits of the head over the texts' embeddings."""
        texts = check_texts(x, self.name)
        if not texts:
            return torch.zeros(0, self.num_classes)
        with torch.no_grad():
            return self.head(self.embed(texts)).float()

    def fingerprint(self) -> str:
        return hash_tensors(list(self.head.state_dict().values()), self.encoder.fingerprint())


def fit_linear_head(
    emb: torch.Tensor, y: torch.Tensor, num_classes: int, *, seed: int, epochs: int = 100,
    lr: float = 0.05, weight_decay: float = 1e-4,
) -> nn.Linear:  # fmt: skip
    """Multinomial logistic regression on fixed embeddings: full-batch Adam, seeded init."""
    with seeded(seed):
        head = nn.Linear(emb.shape[1], num_classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        loss_fn(head(emb), y).backward()
        opt.step()
    return head.eval()
