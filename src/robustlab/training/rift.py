"""RiFT: robust critical fine-tuning of an adversarially trained model (Zhu et al., ICCV 2023; S5).

Zhu et al., "Improving Generalization of Adversarial Training via Robust Critical Fine-Tuning":
adversarial training leaves redundant capacity in some modules. RiFT

1. measures each module's **robust criticality** (MRC): the largest increase of the adversarial
   loss when only that module's weights move within a ball of radius ``rho`` times their own L2
   norm (:func:`robustlab.training.weightspace.sharpness` on the cross-entropy of fixed PGD
   examples of the adversarially trained model, ``examples`` training images);
2. fine-tunes the **least critical** module on clean data (cross-entropy; all other weights and
   BatchNorm statistics frozen);
3. **interpolates** ``(1 - alpha) * robust + alpha * fine-tuned`` and keeps the alpha with the best
   clean accuracy on the held-out batch among those whose PGD accuracy there is at least the robust
   model's (alpha = 0) minus ``tolerance``.

Use it as the trainer of a ``trained`` model whose ``base`` is the adversarially trained model::

    base: {name: trained, params: {base: {name: small-cnn, params: {side: 8, width: 8}},
                                   data: {name: digits, params: {split: train}},
                                   trainer: {name: pgd-at, params: {eps: 0.15, lr: 0.003}},
                                   epochs: 8}}
    data: {name: digits, params: {split: train}}
    trainer: {name: rift, params: {eps: 0.15, lr: 0.003, tolerance: 0.02}}
    epochs: 3

The criticality table, the chosen module, the interpolation curve on the held-out batch and the
chosen alpha are stored in ``provenance["finish"]``. The held-out batch (``holdout`` of the
``trained`` model, default 256) is required unless ``alpha`` is fixed. Measured on digits (seeds
0-3, docs/weight-space.md): clean accuracy +0.3 to +3.0 points, PGD accuracy -2.0 to +0.3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.attacks.pgd import PGD
from robustlab.core.errors import ConfigError
from robustlab.core.registry import trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Norm, Positive, PositiveInt, Rate, ThreatModel
from robustlab.training import weightspace as ws
from robustlab.training.trainers import Position, Step, train_mode


@trainers.register("rift")
@dataclass(eq=False)
class RiFT:
    """Robust critical fine-tuning (Zhu et al., 2023): fine-tune the module with the lowest robust
    criticality on clean data, then interpolate with the robust weights.

    ``eps``/``norm``/``steps``: the threat model and PGD steps of the adversarial examples (the
    criticality's loss and the held-out robust accuracy that bounds alpha); ``rho``: the weight
    ball's radius relative to each module's norm (the paper's 0.1); ``ascent_steps``: projected
    gradient-ascent steps on the weights per module; ``examples``: training images the criticality
    is measured on; ``module``: fine-tune this module (a layer name such as ``"head.1"``) instead
    of the least critical one; ``alphas``: the interpolation grid size on [0, 1];
    ``tolerance``: the held-out PGD accuracy alpha may lose against the robust model; ``alpha``:
    a fixed interpolation weight instead of choosing one.
    """

    needs_grad = True

    eps: Positive = 0.1
    norm: Norm = "inf"
    steps: PositiveInt = 10
    rho: Positive = 0.1
    ascent_steps: PositiveInt = 5
    examples: PositiveInt = 512
    module: str | None = None
    alphas: PositiveInt = 11
    tolerance: Rate = 0.01
    alpha: Rate | None = None
    lr: Positive = 1e-3
    batch_size: PositiveInt = 128

    def __post_init__(self) -> None:
        if self.alphas < 2 and self.alpha is None:
            raise ConfigError("rift: alphas must be >= 2 (the grid includes 0 and 1)")
        self.criticality: dict[str, float] = {}
        self.chosen: str | None = None
        self._robust: dict[str, torch.Tensor] | None = None

    # hooks -------------------------------------------------------------------------------------
    def setup(self, clf: Any, train: Any) -> None:
        """Keep the robust weights and measure every module's robust criticality on them."""
        self._robust = ws.module_state(clf.module)
        self.criticality = criticality(
            clf, train, self.threat, self.steps, self.rho, self.ascent_steps, self.examples
        )
        if self.module is not None:
            if self.module not in self.criticality:
                raise ConfigError(
                    f"rift: module {self.module!r} is not a layer with weights of the base "
                    f"model; layers: {sorted(self.criticality)}"
                )
            self.chosen = self.module
        else:
            self.chosen = min(self.criticality, key=lambda k: (self.criticality[k], k))

    def trainable(self, clf: Any) -> list[torch.nn.Parameter]:
        assert self.chosen is not None, "setup() first"
        return list(clf.module.get_submodule(self.chosen).parameters())

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        """Clean cross-entropy; only the chosen module in train mode (the loop froze the others:
        their BatchNorm layers keep their running statistics)."""
        assert self.chosen is not None, "setup() first"
        train_mode(clf.module)
        logits = clf.logits(x)
        return Step(F.cross_entropy(logits, y), logits.detach())

    def finish(self, clf: Any, train: Any, holdout: Any) -> dict[str, Any]:
        """Interpolate the fine-tuned weights with the robust ones; choose alpha on ``holdout``."""
        from robustlab.training.loop import LoopConfig, evaluate

        assert self._robust is not None, "setup() first"
        tuned = ws.module_state(clf.module)
        out: dict[str, Any] = {
            "criticality": dict(self.criticality),
            "module": self.chosen,
            "rho": self.rho,
        }
        if self.alpha is not None:
            clf.module.load_state_dict(ws.interpolate(self._robust, tuned, self.alpha))
            clf.module.eval()
            out["alpha"] = self.alpha
            return out
        if holdout is None:
            raise ConfigError(
                "rift chooses alpha on the held-out batch: set the trained model's holdout > 0, "
                "or fix the trainer's alpha"
            )
        cfg = LoopConfig(epochs=1, seed=0, eval_eps=self.eps, eval_norm=str(self.norm),
                         eval_steps=self.steps)  # fmt: skip
        curve = []
        for i in range(self.alphas):
            a = i / (self.alphas - 1)
            clf.module.load_state_dict(ws.interpolate(self._robust, tuned, a))
            r = evaluate(clf, holdout, cfg, seed=0)
            curve.append({"alpha": a, "clean_acc": r["clean_acc"], "pgd_acc": r["pgd_acc"]})
        alpha = choose_alpha(curve, self.tolerance)
        clf.module.load_state_dict(ws.interpolate(self._robust, tuned, alpha))
        clf.module.eval()
        out.update(curve=curve, alpha=alpha, tolerance=self.tolerance)
        return out

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(self.norm, self.eps)


def choose_alpha(curve: list[dict[str, float]], tolerance: float) -> float:
    """RiFT's choice: among the curve's points (``alpha``, ``clean_acc``, ``pgd_acc``; the first
    at alpha = 0, the robust model) whose ``pgd_acc`` is at least the robust model's minus
    ``tolerance``, the one with the best clean accuracy (ties: the higher robust accuracy, then the
    smaller alpha)."""
    floor = curve[0]["pgd_acc"] - tolerance
    ok = [c for c in curve if c["pgd_acc"] >= floor - 1e-12]
    best = max(ok, key=lambda c: (c["clean_acc"], c["pgd_acc"], -c["alpha"]))
    return float(best["alpha"])


def criticality(
    clf: Any,
    data: Any,
    threat: ThreatModel,
    steps: int = 10,
    rho: float = 0.1,
    ascent_steps: int = 5,
    examples: int = 512,
) -> dict[str, float]:
    """Module robust criticality (Zhu et al., 2023) of every layer of ``clf`` with a weight
    matrix or kernel (convolutions, linear maps; as in the paper, not normalization layers):
    ``{layer: max adversarial-loss increase}`` under a weight perturbation of that layer alone
    within ``rho`` times its norm (:func:`~robustlab.training.weightspace.sharpness`), on PGD
    examples (``steps`` steps in ``threat``, found on ``clf`` as it is) of the first ``examples``
    images of a seeded permutation of ``data``. Deterministic; the weights are left unchanged."""
    n = len(data)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(n, generator=g)[: min(examples, n)].sort().values
    sub = data.take(idx)
    dev = clf.device
    x, y = torch.as_tensor(sub.x).to(dev), torch.as_tensor(sub.y).to(dev)
    clf.module.eval()
    rng = ExampleRNG.from_seed("rift-criticality", sub.ids)
    x_adv = PGD(steps=steps, early_stop=False)(clf, x, y, threat, rng=rng).x_adv.detach()

    def loss() -> torch.Tensor:
        return F.cross_entropy(clf.logits(x_adv), y)

    groups = ws.parameter_groups(clf.module)
    return {
        name: ws.sharpness(loss, ps, rho, ascent_steps)
        for name, ps in groups.items()
        if any(p.dim() >= 2 for p in ps)  # convolutions and linear maps, not normalizations
    }
