"""Adapters for plain Python callables: classifiers, generators and rankers (black-box)."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.types import Capabilities, Domain


def _callable_fingerprint(fn: Callable[..., Any], version: str | None) -> str:
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        src = getattr(fn, "__qualname__", repr(type(fn)))
    return hashlib.sha256(f"{src}|{version}".encode()).hexdigest()[:16]


class CallableClassifier:
    """Any callable ``fn(x) -> [B, C]`` returning logits (``output="logits"``) or probabilities.

    Pass ``grad=True`` only if ``fn`` is differentiable torch code. ``version`` names the model in
    fingerprints when its source code alone does not identify it.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], Any],
        num_classes: int,
        domain: Domain | None = None,
        output: str = "logits",
        grad: bool = False,
        version: str | None = None,
    ) -> None:
        if output not in ("logits", "probs"):
            raise ConfigError(f"output must be 'logits' or 'probs', got {output!r}")
        self.fn = fn
        self.num_classes = num_classes
        self.domain = domain or Domain(-float("inf"), float("inf"))
        self.output = output
        self.version = version
        self.capabilities = Capabilities(grad=grad, batch=True, probs_only=output == "probs")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.as_tensor(self.fn(x))
        if self.output == "probs":
            out = out.float().clamp_min(1e-12).log()
        return out

    def fingerprint(self) -> str:
        return _callable_fingerprint(self.fn, self.version)


class CallableGenerator:
    """Any callable ``fn(prompts) -> list[str]`` as a text generator."""

    def __init__(self, fn: Callable[[list[str]], list[str]], version: str | None = None) -> None:
        self.fn = fn
        self.version = version
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=True)

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> list[str]:
        return [str(o) for o in self.fn(list(prompts), **kwargs)]

    def fingerprint(self) -> str:
        return _callable_fingerprint(self.fn, self.version)


class CallableRanker:
    """Any callable ``fn(query, docs) -> scores`` as a ranker (higher score = more relevant)."""

    def __init__(self, fn: Callable[[str, list[str]], Any], version: str | None = None) -> None:
        self.fn = fn
        self.version = version
        self.capabilities = Capabilities(grad=False, batch=False, probs_only=True)

    def scores(self, query: str, docs: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor(self.fn(query, list(docs)), dtype=torch.float32)

    def fingerprint(self) -> str:
        return _callable_fingerprint(self.fn, self.version)
