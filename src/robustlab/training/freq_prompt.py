"""The ``freq-prompt`` trainer: learns S6's test-time frequency-domain prompts (Huang et al., 2023).

Its base must be a ``freq-prompted`` model (:mod:`robustlab.models.freq_prompted`). ``setup``
clusters the training data (k-means with k-means++ seeding on the frozen base's logits or on the
pixels, as the model's ``features`` says) and stores the centroids as the module's ``prototypes``
buffer (saved with the weights); ``trainable`` is the prompts' Fourier coefficients only, so the
base model stays frozen. The objective is the seed's: adversarial training of the prompts --
cross-entropy at the point robustlab's PGD finds through the whole defence (prompt selection
included, re-selected at every step; gradient through the prompt addition), plus ``clean_weight``
x the clean cross-entropy.

Example::

    import robustlab
    base = {"name": "trained", "params": {...a standard model...}}
    clf = robustlab.train({
        "base": {"name": "freq-prompted", "params": {"base": base, "clusters": 8}},
        "data": {"name": "digits", "params": {"split": "train"}},
        "trainer": {"name": "freq-prompt", "params": {"eps": 0.1}},
        "epochs": 5,
    })
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.attacks.pgd import PGD
from robustlab.core.errors import ConfigError
from robustlab.core.registry import trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import NonNegative, Norm, Positive, PositiveInt, ThreatModel
from robustlab.defenses.freq_prompt import FreqPromptNet, kmeans
from robustlab.training.trainers import Position, Step, _attack, _forward


@trainers.register("freq-prompt")
@dataclass(eq=False)
class FreqPrompt:
    """Adversarial training of S6's cluster prompts with the base model frozen.

    ``eps``/``steps``/``step_size``/``norm``: the inner PGD (through the defence); ``clean_weight``:
    weight of the clean cross-entropy added to the adversarial one; ``kmeans_iters``: Lloyd
    iterations of the clustering (seeded, deterministic); ``lr``: Adam's rate on the Fourier
    coefficients (orthonormal FFT: coefficient units are pixel units).
    """

    needs_grad = True

    eps: Positive = 0.1
    steps: PositiveInt = 7
    step_size: Positive | None = None
    norm: Norm = "inf"
    clean_weight: NonNegative = 0.0
    kmeans_iters: PositiveInt = 30
    lr: Positive = 1e-2
    batch_size: PositiveInt = 128

    def _net(self, clf: Any) -> FreqPromptNet:
        net = clf.module
        if not isinstance(net, FreqPromptNet):
            raise ConfigError(
                f"trainer 'freq-prompt' trains the prompts of a 'freq-prompted' model; its base is "
                f"{getattr(clf, 'name', type(clf).__name__)!r} ({type(net).__name__}): use base "
                "{name: freq-prompted, params: {base: <your model>}}"
            )
        return net

    def setup(self, clf: Any, train: Any) -> None:
        """Cluster the training data and store the prototypes (deterministic: k-means++ seed 0)."""
        net = self._net(clf)
        x = torch.as_tensor(train.x)
        feats = torch.cat(
            [net.features(x[i : i + 512].to(clf.device)).cpu() for i in range(0, len(x), 512)]
        )
        centres, _ = kmeans(feats, len(net.prototypes), seed=0, iters=self.kmeans_iters)
        net.set_prototypes(centres)

    def trainable(self, clf: Any) -> Iterable[torch.nn.Parameter]:
        """The prompts' Fourier coefficients; the base model is frozen."""
        net = self._net(clf)
        return [net.coef_re, net.coef_im]

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        attack = PGD(steps=self.steps, step_size=self.step_size, early_stop=False)
        x_adv = _attack(clf, attack, x, y, ThreatModel(self.norm, self.eps), rng)
        if self.clean_weight > 0:
            logits = _forward(clf, torch.cat([x_adv, x]))
            adv, clean = logits[: len(x)], logits[len(x) :]
            loss = F.cross_entropy(adv, y) + self.clean_weight * F.cross_entropy(clean, y)
            return Step(loss, adv.detach())
        adv = _forward(clf, x_adv)
        return Step(F.cross_entropy(adv, y), adv.detach())
