"""Corruption-augmentation training: cross-entropy on inputs perturbed by registered corruptions.

The trainer ``augment`` trains on images perturbed by one or more registered image perturbations
(``robustlab list perturbations``: ``gaussian_noise``, ``gaussian_blur``, ``contrast``, ...) --
the same code, severities and per-example random streams a ``perturbation`` probe evaluates with --
optionally mixed with clean images (``clean_fraction``). It is the corruption-trained model of
Robust Weight Signatures (S11, :mod:`robustlab.training.rws`) and the augmentation baseline of the
small-teacher transfer (S7, :mod:`robustlab.training.teacher`); in the literature it is the
"Gaussian / corruption data augmentation" baseline of Hendrycks & Dietterich (ICLR 2019).

Each example of a batch independently draws (from its own stream, so the draw does not depend on
the batch it is in) whether it stays clean (probability ``clean_fraction``), which perturbation
(uniform over ``perturbations``) and which severity (uniform over ``severities``); the batch is
then perturbed one (perturbation, severity) group at a time -- batched tensor code, a handful of
calls per batch, no per-example loop.

Example::

    import robustlab
    clf = robustlab.train({
        "base": {"name": "small-cnn", "params": {"side": 8}},
        "data": {"name": "digits", "params": {"split": "train"}},
        "trainer": {"name": "augment", "params": {
            "perturbations": ["gaussian_noise", "gaussian_blur"], "severities": [2, 3],
            "clean_fraction": 0.5, "lr": 3e-3}},
        "epochs": 5,
    })
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import AfterValidator

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations as _registry
from robustlab.core.registry import trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Positive, PositiveInt, Rate
from robustlab.training.trainers import Position, Step, _forward


def _image_perturbation(name: str) -> str:
    """``name`` if it is a registered image perturbation that needs nothing but ``(x, severity,
    rng)``; else ``ValueError`` (the registry's message, with its did-you-mean)."""
    try:
        obj = _registry.get(name)
    except ConfigError as e:
        msg = str(e).split(" (known:")[0]
        raise ValueError(f"a registered image perturbation: {msg}") from None
    if getattr(obj, "modality", None) != "image":
        raise ValueError(f"an image perturbation; {name!r} perturbs {obj.modality!r} inputs")
    extra = [
        p.name
        for p in list(inspect.signature(obj.__call__).parameters.values())[4:]
        if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if extra:
        raise ValueError(f"a perturbation of the images alone; {name!r} also needs {extra}")
    return name


def _image_perturbations(value: str | list[str]) -> str | list[str]:
    for name in perturbation_names(value):
        _image_perturbation(name)
    return value


PerturbationNames = Annotated[str | list[str], AfterValidator(_image_perturbations)]


def perturbation_names(value: str | list[str]) -> list[str]:
    """The ``perturbations`` parameter as a list of names."""
    return [value] if isinstance(value, str) else list(value)


@trainers.register("augment")
@dataclass(eq=False)
class Augment:
    """Cross-entropy on images corrupted by registered perturbations (corruption augmentation).

    ``perturbations``: one registered image perturbation name or a list (each corrupted example
    draws one uniformly); ``severities``: a severity or a list (drawn uniformly per example; each
    must lie in every listed perturbation's level domain, e.g. 0-5 for the ImageNet-C ones);
    ``clean_fraction``: the probability that an example is left clean. Perturbations are applied
    with per-example random streams derived from the loop's (seed, epoch, example id), as a
    ``perturbation`` probe applies them at evaluation. Reference: Hendrycks & Dietterich (ICLR
    2019); used by S11 (Robust Weight Signatures) and S7 (robust small teacher).

    Example: ``{name: augment, params: {perturbations: [gaussian_noise], severities: [3]}}``.
    """

    needs_grad = False

    perturbations: PerturbationNames = "gaussian_noise"
    severities: float | list[float] = 3.0
    clean_fraction: Rate = 0.0
    lr: Positive = 1e-3
    batch_size: PositiveInt = 128

    def __post_init__(self) -> None:
        self._names = perturbation_names(self.perturbations)
        self._levels = (
            [float(self.severities)]
            if isinstance(self.severities, int | float)
            else [float(s) for s in self.severities]
        )
        if not self._names:
            raise ConfigError("trainer 'augment' parameter 'perturbations' lists no perturbation")
        if not self._levels:
            raise ConfigError("trainer 'augment' parameter 'severities' lists no severity")
        self._ops: dict[str, Any] = {}
        for name in self._names:
            try:
                _image_perturbation(name)
            except ValueError as e:
                raise ConfigError(f"trainer 'augment' parameter 'perturbations' must be {e}") from None  # fmt: skip
            dom = _registry.levels(name)
            if dom is not None:
                dom.check(self._levels, f"trainer 'augment', perturbation {name!r}")
            self._ops[name] = _registry.create(name)

    def corrupt(self, x: torch.Tensor, rng: ExampleRNG) -> torch.Tensor:
        """``x`` with each example corrupted (or kept clean) as drawn from its stream in ``rng``."""
        u = rng.fork("augment|choice").uniform(3, device=x.device)  # [B, 3]
        clean = u[:, 0] < self.clean_fraction
        which = (u[:, 1] * len(self._names)).long().clamp_max(len(self._names) - 1)
        level = (u[:, 2] * len(self._levels)).long().clamp_max(len(self._levels) - 1)
        group = torch.where(clean, -1, which * len(self._levels) + level)
        out = x.clone()
        for g in group.unique().tolist():
            if g < 0:
                continue
            name, sev = self._names[g // len(self._levels)], self._levels[g % len(self._levels)]
            idx = (group == g).nonzero().flatten()
            streams = rng.fork(f"augment|{name}|{sev!r}").take(idx)
            out[idx] = self._ops[name](x[idx], sev, streams).to(x.dtype)
        return out

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        logits = _forward(clf, self.corrupt(x, rng))
        return Step(F.cross_entropy(logits, y), logits.detach())


def corruption_accuracy(
    clf: Any, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, perturbation: str,
    severity: float, seed: int = 0, chunk: int = 1024,
) -> float:  # fmt: skip
    """Accuracy of ``clf`` on ``x`` perturbed by registered ``perturbation`` at ``severity``,
    with per-example streams ``ExampleRNG.from_seed(seed, ids)`` (one draw per example, as a
    probe evaluates); severity 0 is clean accuracy."""
    op = _registry.create(perturbation)
    rng = ExampleRNG.from_seed(seed, ids)
    correct = 0
    clf.module.eval()
    for i in range(0, len(x), chunk):
        xs = x[i : i + chunk]
        idx = torch.arange(i, i + len(xs))
        xp = op(xs, severity, rng.fork(perturbation).take(idx)) if severity else xs
        with torch.no_grad():
            correct += int((clf.logits(xp).argmax(1) == y[i : i + chunk].to(xp.device)).sum())
    return correct / max(len(x), 1)
