"""Registered trainers: the per-batch objective of standard and adversarial training.

A trainer is a small object (hyperparameters in ``__init__``, scikit-learn style) whose
``step(clf, x, y, rng, at)`` returns the loss to minimise on one batch and the logits its accuracy is
read from; the loop (:mod:`robustlab.training.loop`) owns the optimizer, epochs, checkpoints and
evaluation. Every inner maximisation calls robustlab's own attack core (:class:`~robustlab.attacks.
pgd.PGD`), the same code that evaluates robustness: there is no second PGD implementation.

Threat model: an Lp ball of radius ``eps`` around each input (``norm``, default Linf), intersected
with the model's input domain. Adversarial examples are searched with the module in eval mode
(BatchNorm uses its running statistics, as in Zhang et al.'s TRADES code), and the weights are
updated in train mode.

Optional hooks a trainer may define (the loop and :func:`robustlab.training.api.build` call them
when present):

- ``setup(clf, train)``: once before the first batch (also after a resume), with the model and the
  training :class:`~robustlab.data.base.Dataset` (allocate per-example state, build a teacher);
- ``trainable(clf) -> iterable of parameters``: the parameters the optimizer updates (default: all);
  the others get ``requires_grad=False`` for the fit and are restored afterwards;
- ``state_dict() -> dict`` / ``load_state_dict(state)``: trainer state saved in every epoch's
  checkpoint and restored on resume (so a resumed run equals an uninterrupted one);
- ``finish(clf, train, holdout) -> dict | None``: after the last epoch, may change the weights
  (RiFT's interpolation); its JSON-able result is stored as ``provenance["finish"]``. It must be a
  deterministic function of the weights and data: a kill after the last epoch re-runs it.

Example::

    from robustlab.core.registry import trainers
    t = trainers.create("pgd-at", {"eps": 0.1, "steps": 7})
    loss, logits = t.step(clf, x, y, rng, Position())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from robustlab.attacks.pgd import PGD
from robustlab.core.errors import ConfigError
from robustlab.core.registry import trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import (
    NonNegative,
    NonNegativeInt,
    Norm,
    Positive,
    PositiveInt,
    Rate,
    ThreatModel,
)


@dataclass(frozen=True)
class Position:
    """Where the loop is: ``epoch`` (1-based) of ``epochs``, ``batch`` (0-based) of ``batches``
    per epoch; for trainers whose objective follows a schedule (IBP's eps and kappa ramps).
    ``index``: the batch's positions in the training set (int64 ``[B]``), for trainers that keep
    per-example state (ELR's target estimates); None outside the loop."""

    epoch: int = 1
    epochs: int = 1
    batch: int = 0
    batches: int = 1
    index: torch.Tensor | None = None

    @property
    def fraction(self) -> float:
        """Batches done before this one over all batches of the training, in [0, 1)."""
        return ((self.epoch - 1) * self.batches + self.batch) / (self.epochs * self.batches)


@dataclass
class Step:
    """One batch's objective: ``loss`` (a scalar to minimise) and the ``logits`` it was computed on
    (adversarial logits for adversarial trainers), for the running training accuracy."""

    loss: torch.Tensor
    logits: torch.Tensor


def train_mode(net: torch.nn.Module) -> torch.nn.Module:
    """``net.train()``, except submodules whose parameters are all frozen (left out by a
    ``trainable`` hook or ``train_only``): they run in eval mode -- BatchNorm on its running
    statistics, no dropout or drop-connect -- so a frozen backbone is a fixed function, not
    changed by the batches it sees."""
    net.train()
    if all(p.requires_grad for p in net.parameters()):
        return net
    for m in net.modules():  # top-down: a frozen subtree goes to eval as a whole
        ps = list(m.parameters())
        if ps and not any(p.requires_grad for p in ps):
            m.eval()
    return net


def _forward(clf: Any, x: torch.Tensor) -> torch.Tensor:
    train_mode(clf.module)
    return clf.logits(x)


def only(clf: Any, prefixes: list[str] | None, trainer: str) -> list[torch.nn.Parameter]:
    """The parameters of ``clf.module`` named by ``prefixes`` (a module path such as
    ``net._fc``, or a parameter name; None: all parameters), for a trainer's ``train_only``."""
    named = list(clf.module.named_parameters())
    if prefixes is None:
        return [p for _, p in named]
    picked = [p for n, p in named if any(n == q or n.startswith(q + ".") for q in prefixes)]
    missing = [q for q in prefixes if not any(n == q or n.startswith(q + ".") for n, _ in named)]
    if missing or not picked:
        tops = sorted({n.rsplit(".", 1)[0] for n, _ in named})
        shown = ", ".join(tops[:12]) + (", ..." if len(tops) > 12 else "")
        raise ConfigError(
            f"trainer {trainer!r}: train_only {missing or prefixes} names no parameter of the base "
            f"model's module; modules with parameters: {shown}"
        )
    return picked


class _TrainOnly:
    """``train_only``: train only the parameters under these module paths (fine-tune a head); the
    rest is frozen and runs in eval mode (:func:`train_mode`)."""

    train_only: list[str] | None

    def trainable(self, clf: Any) -> list[torch.nn.Parameter]:
        return only(clf, self.train_only, getattr(self, "registered_name", type(self).__name__))


def _attack(
    clf: Any, attack: PGD, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, rng: ExampleRNG,
    goal: Any = None,
) -> torch.Tensor:  # fmt: skip
    """``attack``'s adversarial examples for the batch, found with the module in eval mode."""
    clf.module.eval()
    return attack(clf, x, y, threat, goal=goal, rng=rng).x_adv.detach()


@trainers.register("standard")
@dataclass(eq=False)
class Standard(_TrainOnly):
    """Standard training: cross-entropy on clean inputs (Adam, learning rate ``lr``)."""

    needs_grad = False  # no input gradients: any torch module with trainable weights

    lr: Positive = 1e-3
    batch_size: PositiveInt = 128
    train_only: list[str] | None = None

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        logits = _forward(clf, x)
        return Step(F.cross_entropy(logits, y), logits.detach())


@trainers.register("pgd-at")
@dataclass(eq=False)
class PGDAT(_TrainOnly):
    """PGD adversarial training (Madry et al., 2018) with robustlab's PGD as the inner max.

    Minimises the cross-entropy at the point ``steps`` of robustlab's PGD found in the ``norm``
    ball of radius ``eps`` (random start; ``step_size`` relative to eps, default PGD's own
    ``max(2.5 / steps, 1 / 4)``).

    Cost per batch: ``steps`` forward/backward passes of the attack plus one training pass.
    """

    needs_grad = True  # the inner maximisation needs input gradients

    eps: Positive = 0.1
    steps: PositiveInt = 7
    step_size: Positive | None = None
    norm: Norm = "inf"
    lr: Positive = 1e-3
    batch_size: PositiveInt = 128
    train_only: list[str] | None = None

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        attack = PGD(steps=self.steps, step_size=self.step_size, early_stop=False)
        x_adv = _attack(clf, attack, x, y, ThreatModel(self.norm, self.eps), rng)
        logits = _forward(clf, x_adv)
        return Step(F.cross_entropy(logits, y), logits.detach())


class Divergence:
    """Attack goal: move the prediction away from a reference distribution ``p`` (the clean
    softmax, passed where goals take labels): loss = KL(p || softmax(logits)) per example; success
    = the top-1 class differs from ``p``'s. TRADES' inner maximisation (Zhang et al., 2019)."""

    def loss(self, logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, dim=1), p, reduction="none").sum(dim=1)

    def success(self, logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=1) != p.argmax(dim=1)


@trainers.register("trades")
@dataclass(eq=False)
class TRADES(_TrainOnly):
    """TRADES (Zhang et al., 2019): clean cross-entropy + beta x KL to the adversarial output.

    The loss is the cross-entropy on clean inputs plus ``beta`` times KL(f(x) || f(x')), where
    x' maximises that KL in the ball (robustlab's PGD with the :class:`Divergence` goal,
    ``steps`` steps of ``step_size`` x eps from a random start). Larger ``beta`` trades clean
    accuracy for robustness.
    """

    needs_grad = True

    eps: Positive = 0.1
    beta: NonNegative = 6.0
    steps: PositiveInt = 7
    step_size: Positive | None = None
    norm: Norm = "inf"
    lr: Positive = 1e-3
    batch_size: PositiveInt = 128
    train_only: list[str] | None = None

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        clf.module.eval()
        with torch.no_grad():
            p = F.softmax(clf.logits(x), dim=1)
        attack = PGD(steps=self.steps, step_size=self.step_size, early_stop=False)
        x_adv = _attack(clf, attack, x, p, ThreatModel(self.norm, self.eps), rng, Divergence())
        clean, adv = _forward(clf, x), clf.logits(x_adv)  # two passes, as in the TRADES code
        kl = F.kl_div(F.log_softmax(adv, dim=1), F.softmax(clean, dim=1), reduction="batchmean")
        return Step(F.cross_entropy(clean, y) + self.beta * kl, adv.detach())


@trainers.register("fgsm-rs")
@dataclass(eq=False)
class FGSMRS(_TrainOnly):
    """Fast adversarial training (Wong et al., 2020): FGSM from a random start, 1.25 eps step.

    FGSM from a uniform random start in the ball, one step of ``step_size`` x eps (default 1.25),
    projected back: robustlab's PGD with one step. Prone to catastrophic overfitting (PGD
    accuracy collapses while FGSM accuracy rises); the loop detects it on its held-out batch each epoch (``on_co`` of the ``trained`` model).
    """

    needs_grad = True

    eps: Positive = 0.1
    step_size: Positive = 1.25
    norm: Norm = "inf"
    lr: Positive = 1e-3
    batch_size: PositiveInt = 128
    train_only: list[str] | None = None

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        attack = PGD(steps=1, step_size=self.step_size, random_start=True, early_stop=False)
        x_adv = _attack(clf, attack, x, y, ThreatModel(self.norm, self.eps), rng)
        logits = _forward(clf, x_adv)
        return Step(F.cross_entropy(logits, y), logits.detach())


@trainers.register("noise")
@dataclass(eq=False)
class Noise:
    """Gaussian-noise training for randomized smoothing (Cohen et al., 2019), optional consistency.

    Cross-entropy on ``x + N(0, sigma^2)`` (unclipped: the noise the smoothing certifier adds);
    ``consistency > 0`` draws two noisy copies and adds ``consistency`` x the mean KL of each
    copy's prediction from their average (Jeong & Shin, 2020); ``view: dual`` noises one of the
    two half images, as ``dual-smoothing`` queries the model. Per-example noise streams. The
    objective is :func:`robustlab.defenses.noise_training.noise_loss`.
    """

    needs_grad = False

    sigma: Positive = 0.25
    consistency: NonNegative = 0.0
    view: Literal["full", "dual"] = "full"
    lr: Positive = 1e-3
    batch_size: PositiveInt = 128

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        from robustlab.defenses.noise_training import noise_loss

        train_mode(clf.module)
        loss, logits = noise_loss(clf.logits, x, y, rng, self.sigma, self.consistency, self.view)
        return Step(loss, logits.detach())


@trainers.register("ibp")
@dataclass(eq=False)
class IBP:
    """Certified training with interval bound propagation (Gowal et al., 2018) at Linf ``eps``.

    Minimises ``kappa CE(f(x), y) + (1 - kappa) CE(worst-case logits over the ball)``; after
    ``warmup`` epochs the training radius ramps linearly from 0 to ``eps_factor`` x eps and kappa
    from 1 to ``kappa_end`` over ``ramp`` epochs (:func:`robustlab.defenses.ibp_training.ibp_loss`).
    The base must be IBP-traceable in training mode: no BatchNorm, no Dropout (e.g. ``mlp``); an
    untraceable base is refused at the first batch.
    """

    needs_grad = False  # bounds, not input gradients
    norm = "inf"  # IBP bounds an L-inf ball (read by the held-out check)

    eps: Positive = 0.1
    warmup: NonNegativeInt = 1
    ramp: NonNegativeInt = 5
    kappa_end: Rate = 0.5
    eps_factor: Positive = 1.1
    lr: Positive = 1e-3
    batch_size: PositiveInt = 128

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        from robustlab.defenses.ibp_training import ibp_loss, schedule

        t = schedule(
            (at.epoch - 1) * at.batches + at.batch, at.epochs * at.batches,
            self.warmup * at.batches, self.ramp * at.batches,
        )  # fmt: skip
        clf.module.train()
        if at.epoch == 1 and at.batch == 0:  # refuse an untraceable base now, not after warmup
            ibp_loss(clf.module, x[:2], y[:2], self.eps, 0.5, clf.domain, clf.mean, clf.std)
        eps_t, kappa = t * self.eps_factor * self.eps, 1 - t * (1 - self.kappa_end)
        loss = ibp_loss(clf.module, x, y, eps_t, kappa, clf.domain, clf.mean, clf.std)
        with torch.no_grad():
            logits = clf.logits(x)
        return Step(loss, logits)
