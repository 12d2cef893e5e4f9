"""Contract check for perturbations."""

from __future__ import annotations

import copy
from typing import Any

import torch

from robustlab.testing.common import ATOL, _ids, _like, _perm, _rng, _same, _unchanged


def check_perturbation(
    perturbation: Any,
    x: Any,
    *,
    severities: Any = None,
    seed: int = 0,
    ids: torch.Tensor | None = None,
) -> None:
    """Check a perturbation's contract on the batch ``x`` at each severity.

    Invariants: output of the same shape, dtype and device (same length for list inputs); input not
    mutated; deterministic under a seed; batch-order invariant (a shuffled sub-batch with its ids
    gets the same outputs); severity 0, where accepted, is the identity; image outputs stay finite in [0, 1].
    """
    ids = _ids(x, ids)
    name = f"perturbation {getattr(perturbation, 'registered_name', type(perturbation).__name__)}"
    image = getattr(perturbation, "modality", "image") == "image"
    levels = list(perturbation.severities if severities is None else severities)
    assert levels, f"{name} declares no severities"
    p = _perm(len(x), seed)
    for s in levels:
        what = f"{name} at severity {s}"
        x0 = x.clone() if isinstance(x, torch.Tensor) else copy.deepcopy(x)
        out = perturbation(x, s, _rng(seed, ids))
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
    try:
        out0 = perturbation(x, 0, _rng(seed, ids))
    except (ValueError, NotImplementedError):
        return  # severity 0 not supported
    if isinstance(x, torch.Tensor):
        _same(out0, x, f"{name} at severity 0 is not the identity", 1e-6)
    else:
        assert out0 == x, f"{name} at severity 0 is not the identity"
