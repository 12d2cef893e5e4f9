"""Contract check for perturbations."""

from __future__ import annotations

import copy
import difflib
import json
from typing import Any

import torch

from robustlab.core.types import VARIANT
from robustlab.testing.common import ATOL, _ids, _like, _perm, _rng, _same, _unchanged


def check_perturbation(
    perturbation: Any,
    x: Any,
    *,
    severities: Any = None,
    seed: int = 0,
    ids: torch.Tensor | None = None,
    severity_matters: bool | None = None,
    monotone: bool | None = None,
) -> None:
    """Check a perturbation's contract on the batch ``x`` at each severity.

    Invariants: output of the same shape, dtype and device (same length for list inputs); input not
    mutated; deterministic under a seed; batch-order invariant (a shuffled sub-batch with its ids
    gets the same outputs); severity 0, where accepted, is the identity; image outputs stay finite in [0, 1].

    Severity (over ``severities`` in the order given, mildest first): with ``severity_matters`` the
    mean distance of the output from ``x`` (:func:`perturbation_distance`) at the top severity
    exceeds the one at the bottom severity; with ``monotone`` too, it never decreases from one
    severity to the next. Both default to on, except for perturbations whose declared
    ``level_domain`` is :data:`~robustlab.core.types.VARIANT` (the level numbers a variant, not a
    strength). Switch them off only for a perturbation whose strength does not show in the distance
    by design, and say why where you do.
    """
    ids = _ids(x, ids)
    name = f"perturbation {getattr(perturbation, 'registered_name', type(perturbation).__name__)}"
    image = getattr(perturbation, "modality", "image") == "image"
    levels = list(perturbation.severities if severities is None else severities)
    assert levels, f"{name} declares no severities"
    p = _perm(len(x), seed)
    dists = []
    for s in levels:
        what = f"{name} at severity {s}"
        x0 = x.clone() if isinstance(x, torch.Tensor) else copy.deepcopy(x)
        out = perturbation(x, s, _rng(seed, ids))
        dists.append(perturbation_distance(x, out))
        _unchanged(x0, x, what)
        again = perturbation(x, s, _rng(seed, ids))
        xp = x[p] if isinstance(x, torch.Tensor) else [x[i] for i in p.tolist()]
        outp = perturbation(xp, s, _rng(seed, ids[p]))
        if not isinstance(x, torch.Tensor):
            assert len(out) == len(x), f"{what} returned {len(out)} items for {len(x)}"
            assert again == out, f"{what} is not deterministic under a seed"
            assert outp == [out[i] for i in p.tolist()], (
                f"{what} is not batch-order invariant (shuffled sub-batch)"
            )
            continue
        _like(out, x, what)
        _same(again, out, f"{what} is not deterministic under a seed", ATOL)
        _same(
            outp,
            out[p.to(out.device)],
            f"{what} is not batch-order invariant (shuffled sub-batch)",
            ATOL,
        )
        if image:
            assert bool(torch.isfinite(out).all()), f"{what} produced NaN or inf"
            lo, hi = float(out.min()), float(out.max())
            assert lo >= 0 and hi <= 1, f"{what} left [0, 1]: output in [{lo:.4g}, {hi:.4g}]"
    strength = getattr(perturbation, "level_domain", None) is not VARIANT
    matters = strength if severity_matters is None else severity_matters
    _check_severity(name, levels, dists, matters, matters if monotone is None else monotone)
    try:
        out0 = perturbation(x, 0, _rng(seed, ids))
    except (ValueError, NotImplementedError):
        return  # severity 0 not supported
    if isinstance(x, torch.Tensor):
        _same(out0, x, f"{name} at severity 0 is not the identity", 1e-6)
    else:
        assert out0 == x, f"{name} at severity 0 is not the identity"


def perturbation_distance(x: Any, out: Any) -> float:
    """Mean distance of a perturbed batch from its input: the mean absolute difference per element
    for tensors; for other items (texts, problems) ``1 - difflib``'s similarity ratio of their
    strings (0: unchanged, 1: nothing in common), averaged over the batch."""
    if isinstance(x, torch.Tensor):
        return float((out.double() - x.double()).abs().mean()) if x.numel() else 0.0
    if not len(x):
        return 0.0

    def text(v: Any) -> str:
        return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)

    ratios = [
        difflib.SequenceMatcher(None, text(a), text(b)).ratio() for a, b in zip(x, out, strict=True)
    ]
    return 1.0 - sum(ratios) / len(ratios)


def _check_severity(
    name: str, levels: list[Any], dists: list[float], matters: bool, monotone: bool
) -> None:
    table = ", ".join(f"{s}: {d:.4g}" for s, d in zip(levels, dists, strict=True))
    if matters and len(levels) > 1:
        assert dists[-1] > dists[0], (
            f"{name}: severity does not matter, the top severity {levels[-1]} is no farther from "
            f"the input than the bottom one {levels[0]} (mean distance by severity: {table})"
        )
    if monotone:
        for i in range(1, len(levels)):
            assert dists[i] >= dists[i - 1] - 1e-9 * max(1.0, dists[i - 1]), (
                f"{name}: severity {levels[i]} is closer to the input than severity "
                f"{levels[i - 1]} (mean distance by severity: {table})"
            )
