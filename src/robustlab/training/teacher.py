"""Robust small teacher tunes a fraction of a larger model (S7): ``teacher-transfer``.

Jain et al., "Efficiently Robustify Pre-trained Models" (ICCV 2023): robustifying a large
pre-trained model by full fine-tuning is expensive; instead robustify a *small* model cheaply (e.g.
the ``augment`` or ``noise`` trainer) and use it as a teacher that tunes only a few layers of the
large one, by knowledge distillation on perturbed inputs.

The trainer ``teacher-transfer`` is used as the ``trainer`` of a ``trained`` model whose ``base``
is the large (pre-trained) model: per batch, the inputs are corrupted exactly as the ``augment``
trainer does (registered perturbations, severities, ``clean_fraction``; per-example streams); the
loss is ``alpha * T^2 * KL(teacher(x') / T || student(x') / T) + (1 - alpha) * CE(student(x'),
y)`` (Hinton et al.'s distillation plus cross-entropy, both on the batch x' whose examples are
corrupted or, with probability ``clean_fraction``, clean). Only the selected ``layers`` train (by
default the last two; the loop's ``trainable`` hook): the rest are frozen, and frozen BatchNorm
layers keep their running statistics. Cost per example: one forward of the (small)
teacher, one forward of the student and a backward through the tuned layers and those above them
only (autograd builds no graph below the first tuned layer): tuning the last layers of a large
model is cheaper per batch than fine-tuning all of it (measured in docs/teacher-transfer.md).

Example::

    import robustlab
    teacher = {"name": "trained", "params": {
        "base": {"name": "small-cnn", "params": {"side": 8, "width": 8}},
        "data": {"name": "digits", "params": {"split": "train"}},
        "trainer": {"name": "augment", "params": {"perturbations": "gaussian_blur",
                                                   "severities": [1, 2], "clean_fraction": 0.5}}}}
    large = {"name": "trained", "params": {...}}  # a pre-trained large model
    clf = robustlab.train({"base": large, "data": {"name": "digits", "params": {"split": "train"}},
                           "trainer": {"name": "teacher-transfer", "params": {
                               "teacher": teacher, "layers": -2, "perturbations": "gaussian_blur",
                               "severities": [1, 2], "clean_fraction": 0.5}},
                           "epochs": 2})
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models, trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Positive, PositiveInt, Rate
from robustlab.models.trained import spec_param
from robustlab.training import weightspace as ws
from robustlab.training.augment import Augment, PerturbationNames
from robustlab.training.trainers import Position, Step, train_mode


@trainers.register("teacher-transfer")
@dataclass(eq=False)
class TeacherTransfer:
    """Distil a robust (small) ``teacher`` into a few layers (default: the last two) of the
    trained model on corrupted inputs, plus cross-entropy (S7, Jain et al., ICCV 2023).

    ``teacher``: a model spec (e.g. a ``trained`` small model with ``augment``), built once at
    setup (cached like any trained model); ``layers``: which layers of the student train:
    ``k > 0`` the first k, ``-k`` the last k (layers with weights, in state order, as in
    :func:`robustlab.training.weightspace.layers`; a BatchNorm counts as one), or a list of layer
    names; the last layers are the cheap ones (no backward below them); ``perturbations``,
    ``severities``, ``clean_fraction``: the corruption of the distillation inputs, as the ``augment`` trainer;
    ``temperature``: the distillation temperature T; ``alpha``: the weight of the distillation
    term (1 - alpha on the cross-entropy with the labels, on the same corrupted/clean batch).
    """

    needs_grad = False

    teacher: spec_param("models")  # type: ignore[valid-type]
    layers: int | list[str] = -2
    perturbations: PerturbationNames = "gaussian_noise"
    severities: float | list[float] = 3.0
    clean_fraction: Rate = 0.0
    temperature: Positive = 2.0
    alpha: Rate = 0.5
    lr: Positive = 1e-3
    batch_size: PositiveInt = 128

    def __post_init__(self) -> None:
        if isinstance(self.layers, int) and self.layers == 0:
            raise ConfigError(
                "trainer 'teacher-transfer' parameter 'layers' must be k > 0 (the first k layers), "
                "-k < 0 (the last k) or a list of layer names; got 0"
            )
        self._augment = Augment(self.perturbations, self.severities, self.clean_fraction)
        self._teacher: Any = None
        self._names: list[str] | None = None

    def setup(self, clf: Any, train: Any) -> None:
        """Build the teacher (same input domain and classes as the student) and pick the layers."""
        name, params = self.teacher["name"], self.teacher.get("params") or {}
        t = models.create(name, params)
        if not isinstance(getattr(t, "module", None), torch.nn.Module):
            raise ConfigError(f"teacher {name!r} is not a torch model (its logits are distilled)")
        if t.num_classes != clf.num_classes:
            raise ConfigError(
                f"teacher {name!r} has {t.num_classes} classes, the trained model "
                f"{clf.num_classes}: the teacher must classify the same classes"
            )
        t.domain.check(train.x[:2], f"training data for teacher {name!r}")
        self._teacher = copy.deepcopy(t)
        self._teacher.module.eval()  # on its own device; its logits are moved to the student's
        for p in self._teacher.module.parameters():
            p.requires_grad_(False)
        order = ws.layers(clf.module.state_dict())
        params = {ws.layer_of(n) for n, _ in clf.module.named_parameters()}
        order = [n for n in order if n in params]  # layers with trainable weights
        if isinstance(self.layers, int):
            if abs(self.layers) > len(order):
                raise ConfigError(
                    f"layers {self.layers} exceeds the model's {len(order)} layers with weights "
                    f"{order}"
                )
            self._names = order[: self.layers] if self.layers > 0 else order[self.layers :]
        else:
            unknown = [n for n in self.layers if n not in order]
            if unknown:
                raise ConfigError(f"unknown layers {unknown}; the model's layers: {order}")
            self._names = list(self.layers)

    def trainable(self, clf: Any) -> list[torch.nn.Parameter]:
        """The parameters of the selected layers."""
        assert self._names is not None, "setup() first"
        keep = set(self._names)
        return [p for n, p in clf.module.named_parameters() if ws.layer_of(n) in keep]

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        xc = self._augment.corrupt(x, rng)
        with torch.no_grad():
            target = self._teacher.logits(xc).to(xc.device)
        train_mode(clf.module)  # frozen layers (BatchNorm included) in eval mode
        logits = clf.logits(xc)  # one student pass: frozen leading layers build no graph
        t = self.temperature
        kd = F.kl_div(
            F.log_softmax(logits / t, dim=1), F.log_softmax(target / t, dim=1),
            reduction="batchmean", log_target=True,
        ) * (t * t)  # fmt: skip
        loss = self.alpha * kd + (1 - self.alpha) * F.cross_entropy(logits, y)
        return Step(loss, logits.detach())
