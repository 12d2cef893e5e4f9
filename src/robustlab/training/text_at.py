"""Adversarial training for text classifiers: each batch augmented with word-substitution attacks.

The ``text-at`` trainer is the text counterpart of ``pgd-at`` in the one training loop
(:mod:`robustlab.training.loop`): per batch, robustlab's own text attack (``textfooler`` by
default, any registered text attack by name, e.g. ``genetic``) runs against the current model on
the first ``ceil(adv_fraction x B)`` texts of the (randomly permuted) batch with a cheap budget,
and the loss is the mean cross-entropy over the clean batch *plus* the attack's successful
adversarial texts with their original labels. This is how TextAttack's ``Trainer`` trains
(Morris et al., 2020: adversarial examples of successful attacks are added to the training data,
after ``num_clean_epochs`` clean epochs), done per batch against the current weights as in PGD-AT
(Madry et al., 2018) instead of once per epoch.

Threat model: the attack's own (a word edit rate of at most ``budget``, synonyms of the same part
of speech, the attack's similarity and query limits in ``attack_params``). The attack runs with
the head in eval mode and no gradient; its per-example random streams come from the loop (a resumed
run equals an uninterrupted one). The base model needs trainable torch weights, not input
gradients (e.g. ``minilm-mlp``, ``minilm-mvp`` of :mod:`robustlab.models.text_heads`).

Cost per batch: the attack's queries (at most ``max_queries`` model calls per attacked text; on a
frozen-encoder model one encoder pass per new text) plus one training pass over B + successes.

Example::

    clf = robustlab.train({
        "base": {"name": "minilm-mvp", "params": {"data_params": {"limit": 300, "max_words": 30}}},
        "data": {"name": "bbc-news", "params": {"split": "train", "limit": 300, "max_words": 30}},
        "trainer": {"name": "text-at", "params": {"budget": 0.2, "clean_epochs": 17}},
        "epochs": 20, "holdout": 0,
    })
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import NonNegativeInt, Positive, PositiveInt, Rate
from robustlab.training.trainers import Position, Step, _forward, _TrainOnly

CHEAP = {"max_candidates": 8, "max_queries": 20}  # per-batch attack defaults (TextFooler)


@trainers.register("text-at")
@dataclass(eq=False)
class TextAT(_TrainOnly):
    """Text adversarial training: clean batch + successful attack outputs (TextAttack's Trainer)."""

    needs_grad = False  # black-box word substitutions: trainable weights suffice

    attack: str = "textfooler"
    attack_params: dict[str, Any] | None = field(default=None)
    budget: Rate = 0.1
    adv_fraction: Rate = 0.5
    clean_epochs: NonNegativeInt = 0
    lr: Positive = 1e-3
    batch_size: PositiveInt = 64
    train_only: list[str] | None = None

    def __post_init__(self) -> None:
        atk = attacks.create(self.attack, self.params())
        if getattr(atk, "modality", None) != "text":
            raise ConfigError(f"text-at needs a text attack, got {self.attack!r}")
        self._atk = atk

    def params(self) -> dict[str, Any]:
        """The attack's parameters: :data:`CHEAP` for TextFooler unless ``attack_params`` given."""
        if self.attack_params is not None:
            return dict(self.attack_params)
        return dict(CHEAP) if self.attack == "textfooler" else {}

    def adversarial(
        self, clf: Any, x: list[str], y: torch.Tensor, rng: ExampleRNG
    ) -> tuple[list[str], torch.Tensor]:
        """The successful adversarial texts of the first ``ceil(adv_fraction x B)`` texts and their
        labels, found against ``clf`` in eval mode."""
        m = min(len(x), math.ceil(self.adv_fraction * len(x)))
        if m == 0 or self.budget == 0:
            return [], y[:0]
        clf.module.eval()
        with torch.no_grad():
            res = self._atk(clf, list(x[:m]), y[:m], self.budget, rng=rng.take(torch.arange(m)))
        ok = [i for i in range(m) if bool(res.success[i]) and res.x_adv[i] != x[i]]
        return [res.x_adv[i] for i in ok], y[torch.tensor(ok, dtype=torch.long)]

    def step(self, clf: Any, x: list[str], y: torch.Tensor, rng: ExampleRNG, at: Position) -> Step:
        adv, y_adv = ([], y[:0]) if at.epoch <= self.clean_epochs else self.adversarial(
            clf, x, y, rng)  # fmt: skip
        logits = _forward(clf, list(x) + adv)
        loss = F.cross_entropy(logits, torch.cat([y, y_adv]))
        return Step(loss, logits[: len(x)].detach())  # accuracy on the clean batch
