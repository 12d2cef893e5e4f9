"""LLM-TTA: test-time augmentation of a text classifier by rewriting its input (S29, O'Brien et al.,
"Improving black-box robustness with in-context rewriting", 2024).

For an input ``x`` the wrapped classifier ``f`` sees ``x`` and ``k`` rewrites ``r_1(x) .. r_k(x)``
(LLM paraphrases; rule-based rewrites: any registered text perturbation at a severity, the
normalisers ``"spellfix"``/``"spellcheck"`` of :mod:`robustlab.perturbations.text.normalise`, or a
callable); the prediction aggregates them: the mean of the predicted probabilities (``"mean"``) or a
majority vote (``"vote"``, ties broken by the mean). Entropy-selective augmentation (S29)
rewrites only the inputs whose predictive entropy ``H(f(x))`` (nats) exceeds ``entropy_threshold``;
confident inputs keep ``f(x)`` and cost no rewrite. ``share_augmented`` reports the share of inputs
rewritten so far.

Threat model: a defence against natural distribution shift (typos, dilution, paraphrase), black-box
(``f`` is only queried). Rewrites use the per-text random stream keyed by the text itself, so the
output for a text does not depend on its batch, and the adapter is deterministic.

Example::

    base = models.create("tfidf-logreg")
    tta = TTAClassifier(base, rewrites=[("spellcheck", 1), ("paraphrase", 1), ("paraphrase", 2)],
                        entropy_threshold=0.9)
    tta.logits(["Shares in the frim rose sharlpy"]).argmax(1); tta.share_augmented
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.core.types import Capabilities, Domain
from robustlab.perturbations.text.normalise import spellcheck, spellfix

Rewrite = tuple[str, float] | Callable[[list[str]], list[str]]


REWRITES: dict[str, Callable[[list[str]], list[str]]] = {
    "spellfix": spellfix,
    "spellcheck": spellcheck,
}


class TTAClassifier:
    """A text classifier that aggregates the base model's predictions over rewrites of the input."""

    def __init__(
        self,
        base: Any,
        rewrites: Sequence[Rewrite] = (("paraphrase", 1), ("paraphrase", 2), ("paraphrase", 3)),
        aggregate: str = "mean",
        entropy_threshold: float | None = None,
        include_original: bool = True,
        seed: int = 0,
    ) -> None:
        if aggregate not in ("mean", "vote"):
            raise ConfigError(
                f"TTAClassifier aggregate must be 'mean' or 'vote', got {aggregate!r}"
            )
        if not rewrites:
            raise ConfigError("TTAClassifier needs at least one rewrite")
        if entropy_threshold is not None and entropy_threshold < 0:
            raise ConfigError(f"entropy_threshold must be >= 0 (nats), got {entropy_threshold}")
        self.base, self.aggregate, self.seed = base, aggregate, seed
        self.entropy_threshold, self.include_original = entropy_threshold, include_original
        self._rewrites = [self._resolve(r) for r in rewrites]
        self.rewrites = list(rewrites)
        self.num_classes = base.num_classes
        self.classes = getattr(base, "classes", None)
        self.domain = getattr(base, "domain", Domain(-float("inf"), float("inf")))
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=True)
        self.seen = self.augmented = self.queries = 0
        self.last_augmented = torch.zeros(0, dtype=torch.bool)  # per input of the last call

    @staticmethod
    def _resolve(r: Rewrite) -> Callable[[list[str], ExampleRNG], list[str]]:
        if callable(r):
            return lambda x, rng: list(r(x))  # type: ignore[operator]
        if not (isinstance(r, tuple | list) and len(r) == 2 and isinstance(r[0], str)):
            raise ConfigError(
                f"a rewrite is (perturbation name, severity) or a callable, got {r!r}"
            )
        name, severity = r
        if name in REWRITES:
            fn = REWRITES[name]
            return lambda x, rng: fn(x)
        p = perturbations.create(name)
        if getattr(p, "modality", "") != "text":
            raise ConfigError(f"rewrite {name!r} is not a text perturbation")
        return lambda x, rng: p(x, severity, rng)

    @property
    def share_augmented(self) -> float:
        """Share of the inputs seen so far that were rewritten (1.0 without a threshold)."""
        return self.augmented / self.seen if self.seen else 0.0

    def _probs(self, x: list[str]) -> torch.Tensor:
        self.queries += len(x)
        return self.base.logits(x).double().softmax(-1)

    def logits(self, x: list[str]) -> torch.Tensor:
        """Log of the aggregated probabilities ``[B, num_classes]``."""
        if not isinstance(x, list | tuple) or not all(isinstance(t, str) for t in x):
            raise ConfigError(f"TTAClassifier needs a list of strings, got {type(x).__name__}")
        x = list(x)
        if not x:
            self.last_augmented = torch.zeros(0, dtype=torch.bool)
            return torch.zeros(0, self.num_classes)
        p0 = self._probs(x)
        ent = -(p0 * p0.clamp_min(1e-12).log()).sum(-1)
        pick = torch.ones(len(x), dtype=torch.bool)
        if self.entropy_threshold is not None:
            pick = ent > self.entropy_threshold
        idx = pick.nonzero().flatten().tolist()
        self.last_augmented = pick
        self.seen += len(x)
        self.augmented += len(idx)
        if not idx:
            return p0.clamp_min(1e-12).log().float()
        sub = [x[i] for i in idx]
        ids = torch.tensor([seed_from(t) for t in sub], dtype=torch.int64)
        views = [p0[idx]] if self.include_original else []
        for k, rewrite in enumerate(self._rewrites):
            rng = ExampleRNG.from_seed(self.seed, ids).fork(f"tta-{k}")
            views.append(self._probs(rewrite(sub, rng)))
        stack = torch.stack(views)  # [V, b, C]
        agg = stack.mean(0)
        if self.aggregate == "vote":
            votes = torch.nn.functional.one_hot(stack.argmax(-1), self.num_classes).double()
            agg = (votes.mean(0) + 1e-6 * agg) / (1 + 1e-6)
        out = p0.clone()
        out[idx] = agg
        return out.clamp_min(1e-12).log().float()

    def fingerprint(self) -> str:
        spec = repr((self.base.fingerprint(), [r if not callable(r) else getattr(r, "__qualname__", "fn")
                                               for r in self.rewrites], self.aggregate,
                     self.entropy_threshold, self.include_original, self.seed))  # fmt: skip
        return hashlib.sha256(spec.encode()).hexdigest()[:16]
