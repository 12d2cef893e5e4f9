"""Adversarial patches: per-example (LaVAN-style, Karmon et al. 2018) and universal (Brown et al.,
2017); S39/S33.

Threat model (not an Lp ball): a square patch covering a fraction ``eps`` of the image area
(``threat.eps`` in (0, 1]; side ``round(sqrt(eps H W))``) whose pixels may take any value of the input
domain; every pixel outside the patch is unchanged. ``threat.norm`` is ignored. The location is
``"random"`` (per example, from the example's random stream), ``"center"`` or ``"corner"``
(top-left). Patch pixels follow signed gradient ascent on the goal loss (white-box). The
Lp-ball contract checks do not apply: the contract tests list these attacks in ``KNOWN_BUGS`` with
that reason, and ``tests/test_vision_attacks.py`` checks the patch contract instead (in-domain,
unchanged outside the patch, deterministic, batch-order invariant for ``patch``).

Example::

    res = AdversarialPatch(steps=50)(clf, x, y, ThreatModel("inf", 0.1), rng=rng)  # 10% patch
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robustlab.attacks.base import Goal, Misclassified, check_inputs, require_grad
from robustlab.attacks.square import _window
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, Levels, Positive, PositiveInt, ThreatModel


def patch_side(eps: float, h: int, w: int) -> int:
    """Side of a square patch covering a fraction ``eps`` of an ``h x w`` image."""
    if not 0 <= eps <= 1:
        raise ConfigError(f"patch attacks read eps as the patch area fraction in [0, 1], got {eps}")
    return min(h, w, int(round(math.sqrt(eps * h * w))))


def positions(location: str, n: int, s: int, h: int, w: int, rng: ExampleRNG) -> torch.Tensor:
    """Top-left corners ``[n, 2]`` of the patches."""
    if location == "random":
        hi = torch.tensor([h - s + 1, w - s + 1])
        return (rng.uniform(2, dtype=torch.float64) * hi).long().clamp_max(hi - 1)
    if location == "center":
        return torch.tensor([(h - s) // 2, (w - s) // 2]).expand(n, 2)
    if location == "corner":
        return torch.zeros(n, 2, dtype=torch.long)
    raise ConfigError(f"patch location must be 'random', 'center' or 'corner', got {location!r}")


def apply_patch(x: torch.Tensor, patch: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Paste ``patch`` ([B or 1, C, s, s]) into ``x`` ([B, C, H, W]) at ``pos`` (differentiable)."""
    b, _, h, w = x.shape
    s = patch.shape[-1]
    pos = pos.to(x.device)
    oh, mh = _window(pos[:, 0], s, h)
    ow, mw = _window(pos[:, 1], s, w)
    bi = (
        torch.arange(b, device=x.device)
        if patch.shape[0] == b
        else torch.zeros(b, dtype=torch.long, device=x.device)
    )
    placed = patch[bi[:, None, None], :, oh[:, :, None], ow[:, None, :]].permute(0, 3, 1, 2)
    mask = (mh[:, :, None] & mw[:, None, :])[:, None]
    return torch.where(mask, placed, x)


class _PatchBase:
    needs_grad = True  # white-box: validation refuses it on a model without gradients

    threat = "patch"  # not an Lp ball: checked in tests/test_vision_attacks.py
    level_domain = Levels(0, 1, what="patch area fraction")

    def _setup(self, model: Any, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, name: str):
        require_grad(model, name)
        check_inputs(model, x, y, name)
        if x.dim() != 4:
            raise ConfigError(f"{name} needs image batches [B, C, H, W], got {tuple(x.shape)}")
        if self.steps < 0 or self.step_size <= 0:
            raise ConfigError(f"{name} needs steps >= 0 and step_size > 0")
        return patch_side(threat.eps, x.shape[2], x.shape[3])

    def _grad(self, model, x, patch, pos, y, goal):  # type: ignore[no-untyped-def]
        p = patch.detach().requires_grad_(True)
        with torch.enable_grad():
            z = model.logits(apply_patch(x, p, pos))
            (g,) = torch.autograd.grad(goal.loss(z, y).sum(), p)
        return z.detach(), g


@attacks.register("patch")
class AdversarialPatch(_PatchBase):
    """Per-example patch: ``steps`` signed-gradient steps of ``step_size`` (relative to the domain
    range) from a random patch; an example stops when fooled."""

    def __init__(
        self, steps: PositiveInt = 100, step_size: Positive = 0.05, location: str = "random"
    ) -> None:
        self.steps = steps
        self.step_size = step_size
        self.location = location

    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        *,
        goal: Goal | None = None,
        rng: ExampleRNG,
    ) -> AttackResult:
        s = self._setup(model, x, y, threat, "patch")
        goal, dom = goal or Misclassified(), model.domain
        x, y = x.detach(), y.to(x.device)
        n, c = x.shape[:2]
        pos = positions(self.location, n, s, x.shape[2], x.shape[3], rng.fork("loc"))
        if s == 0:
            with torch.no_grad():
                return AttackResult(
                    x.clone(),
                    goal.success(model.logits(x), y).cpu(),
                    torch.ones(n, dtype=torch.long),
                )
        patch = dom.lo + (dom.hi - dom.lo) * rng.fork("init").uniform(c, s, s).to(x)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        queries = torch.zeros(n, dtype=torch.long)
        act = torch.arange(n, device=x.device)
        alpha = self.step_size * (dom.hi - dom.lo)
        for i in range(self.steps + 1):
            z, g = self._grad(model, x[act], patch[act], pos[act.cpu()], y[act], goal)
            queries[act.cpu()] += 1
            hit = goal.success(z, y[act])
            success[act[hit]] = True
            act, g = act[~hit], g[~hit]
            if act.numel() == 0 or i == self.steps:
                break
            patch[act] = (patch[act] + alpha * g.sign()).clamp(dom.lo, dom.hi)
        x_adv = apply_patch(x, patch, pos).detach()
        return AttackResult(x_adv, success.cpu(), queries)


@attacks.register("universal_patch")
class UniversalPatch(_PatchBase):
    """One patch for all inputs (Brown et al.): ``steps`` signed-gradient steps on the mean loss
    over the ``fit`` data, each with fresh random locations when ``location`` is ``"random"``
    (expectation over transformations).

    In a suite the runner fits the patch on the data split named by ``fit_split`` (default
    ``"train"``: the suite's data source with ``split`` replaced), at most ``fit_size`` examples,
    leaving out every example id the suite scores, then applies it to the scored shards: the
    patch never sees the examples it is evaluated on. Called directly without ``fit``, the patch is
    trained on the attacked batch itself (transductive; results then depend on the batch)."""

    def __init__(
        self,
        steps: PositiveInt = 100,
        step_size: Positive = 0.02,
        location: str = "random",
        fit_split: str = "train",
        fit_size: PositiveInt = 512,
    ) -> None:
        self.steps = steps
        self.step_size = step_size
        self.location = location
        self.fit_split = fit_split  # declared: the runner fits on this split, not on scored data
        self.fit_size = fit_size
        self.patch_: torch.Tensor | None = None

    def fit(self, model: Any, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *,
            goal: Goal | None = None, rng: ExampleRNG) -> UniversalPatch:  # fmt: skip
        """Train the patch on ``x, y``; later calls apply it to any batch."""
        s = self._setup(model, x, y, threat, "universal_patch")
        goal, dom = goal or Misclassified(), model.domain
        x, y = x.detach(), y.to(x.device)
        init = rng.fork("init").take(torch.zeros(1, dtype=torch.long)).uniform(x.shape[1], s, s)
        patch = dom.lo + (dom.hi - dom.lo) * init.to(x)
        for t in range(self.steps):
            pos = positions(self.location, len(x), s, x.shape[2], x.shape[3], rng.fork(f"loc{t}"))
            _, g = self._grad(model, x, patch, pos, y, goal)
            patch = (patch + self.step_size * (dom.hi - dom.lo) * g.sign()).clamp(dom.lo, dom.hi)
        self.patch_ = patch.detach()
        return self

    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        *,
        goal: Goal | None = None,
        rng: ExampleRNG,
    ) -> AttackResult:
        s = self._setup(model, x, y, threat, "universal_patch")
        goal = goal or Misclassified()
        patch = self.patch_
        if patch is None or patch.shape[-1] != s:
            patch = UniversalPatch(self.steps, self.step_size, self.location).fit(
                model, x, y, threat, goal=goal, rng=rng).patch_  # fmt: skip
        assert patch is not None
        pos = positions(self.location, len(x), s, x.shape[2], x.shape[3], rng.fork("apply"))
        x_adv = apply_patch(x.detach(), patch.to(x), pos) if s else x.detach().clone()
        with torch.no_grad():
            success = goal.success(model.logits(x_adv), y.to(x.device)).cpu()
        return AttackResult(x_adv, success, torch.full((len(x),), self.steps + 1, dtype=torch.long))
