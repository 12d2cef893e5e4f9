"""Model adapter protocols: the tiny set of requests every model answers.

* :class:`Classifier` -- ``logits(x)`` for a batch of raw inputs in the adapter's ``domain``.
* :class:`Generator` -- ``generate(prompts)``: text in, text out (LLMs, code models).
* :class:`Ranker` -- ``scores(query, docs)``: one relevance score per candidate document.

The adapter owns preprocessing and normalization, and declares its input domain and capabilities
as data, so attacks always work in input space.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from robustlab.core.types import Capabilities, Domain


@runtime_checkable
class Classifier(Protocol):
    """Batched classifier over raw inputs in ``domain``."""

    domain: Domain
    capabilities: Capabilities
    num_classes: int

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, num_classes]`` scores (logits, or log-probabilities if ``probs_only``)."""
        ...

    def fingerprint(self) -> str:
        """A content hash of the model (weights), recorded with every run."""
        ...


@runtime_checkable
class Generator(Protocol):
    """Text-in, text-out model (LLM, code model)."""

    capabilities: Capabilities

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> list[str]: ...

    def fingerprint(self) -> str: ...


@runtime_checkable
class Ranker(Protocol):
    """Scores candidate documents for a query; higher is more relevant."""

    capabilities: Capabilities

    def scores(self, query: str, docs: Sequence[str]) -> torch.Tensor: ...

    def fingerprint(self) -> str: ...


def hash_tensors(tensors: Sequence[torch.Tensor], extra: str = "") -> str:
    """SHA-256 (16 hex digits) over tensors' bytes, in order, plus an extra string."""
    h = hashlib.sha256(extra.encode())
    for t in tensors:
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
