"""Contract check for model adapters."""

from __future__ import annotations

from typing import Any

import torch

from robustlab.core.types import (
    Capabilities,
    Domain,
)
from robustlab.testing.common import ATOL, _perm, _same, _unchanged


def check_adapter(adapter: Any, x: torch.Tensor) -> None:
    """Check a classifier adapter's contract on the batch ``x`` (which must lie in its domain).

    Invariants: declares ``domain`` (a :class:`Domain`), ``capabilities`` and ``num_classes``;
    ``logits`` is a finite float ``[B, num_classes]`` tensor, deterministic and batch-order invariant;
    the input is not mutated; ``fingerprint()`` is a stable non-empty string; with
    ``capabilities.grad`` the logits have finite input gradients of the input's shape.
    """
    name = f"adapter {type(adapter).__name__}"
    assert isinstance(getattr(adapter, "domain", None), Domain), f"{name} declares no Domain"
    caps = getattr(adapter, "capabilities", None)
    assert isinstance(caps, Capabilities), f"{name} declares no Capabilities"
    k = getattr(adapter, "num_classes", None)
    assert isinstance(k, int) and k > 0, f"{name}.num_classes must be an int > 0, got {k!r}"
    adapter.domain.check(x, f"{name} test input")
    x0 = x.clone()
    with torch.no_grad():
        out = adapter.logits(x)
        _unchanged(x0, x, f"{name}.logits")
        assert isinstance(out, torch.Tensor), f"{name}.logits returned {type(out).__name__}"
        assert tuple(out.shape) == (x.shape[0], k), (
            f"{name}.logits returned shape {tuple(out.shape)}, expected ({x.shape[0]}, {k})"
        )
        assert out.is_floating_point(), f"{name}.logits returned dtype {out.dtype}"
        assert bool(torch.isfinite(out).all()), f"{name}.logits returned NaN or inf"
        _same(adapter.logits(x), out, f"{name}.logits is not deterministic", ATOL)
        p = _perm(x.shape[0], 0)
        _same(
            adapter.logits(x[p]),
            out[p.to(out.device)],
            f"{name} is not batch-order invariant (shuffled sub-batch)",
            ATOL,
        )
    fp = adapter.fingerprint()
    assert isinstance(fp, str) and fp, (
        f"{name}.fingerprint() must be a non-empty string, got {fp!r}"
    )
    assert adapter.fingerprint() == fp, f"{name}.fingerprint() is not stable"
    if caps.grad:
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(adapter.logits(xg).sum(), xg, allow_unused=True)
        assert g is not None, f"{name} declares grad but its logits do not depend on the input"
        assert g.shape == x.shape, f"{name} input gradient has shape {tuple(g.shape)}"
        assert bool(torch.isfinite(g).all()), f"{name} input gradient contains NaN or inf"
