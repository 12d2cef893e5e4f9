"""Shared helpers of the contract checks."""

from __future__ import annotations

from typing import Any

import torch

from robustlab.core.rng import ExampleRNG, seed_from

ATOL = 1e-5  # float tolerance for comparing outputs of the same computation in another batch order


def _rng(seed: int, ids: torch.Tensor) -> ExampleRNG:
    return ExampleRNG.from_seed(seed, ids)


def _perm(n: int, seed: int) -> torch.Tensor:
    """A shuffled subset of about half of ``range(n)``: running a component on it checks that an
    example's result depends neither on its position nor on the other examples in the batch."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed_from("perm", seed)))
    if n > 1 and torch.equal(perm, torch.arange(n)):
        perm = perm.flip(0)
    return perm[: max(1, (n + 1) // 2)] if n > 2 else perm


def _ids(x: Any, ids: torch.Tensor | None) -> torch.Tensor:
    return torch.arange(len(x)) if ids is None else ids


def _same(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = 0.0) -> None:
    """Assert two tensors are equal (within ``atol``), naming the first example that differs."""
    assert a.shape == b.shape, f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}"
    diff = (a.double() - b.double()).abs().reshape(a.shape[0], -1) if a.numel() else None
    if diff is None:
        return
    nan_ok = torch.isnan(a.double()) & torch.isnan(b.double())
    diff = diff.masked_fill(nan_ok.reshape(a.shape[0], -1), 0).nan_to_num(float("inf"))
    bad = (diff > atol).any(dim=1).nonzero().flatten()
    assert bad.numel() == 0, (
        f"{what}: {bad.numel()} of {a.shape[0]} examples differ (first: row {int(bad[0])}, "
        f"max abs difference {float(diff[bad[0]].max()):.3g} > tolerance {atol:g})"
    )


def _unchanged(before: Any, after: Any, what: str) -> None:
    if isinstance(before, torch.Tensor):
        assert torch.equal(before, after), f"{what} mutated its input tensor in place"
    else:
        assert before == after, f"{what} mutated its (non-tensor) input in place"


def _like(out: torch.Tensor, x: torch.Tensor, what: str) -> None:
    assert isinstance(out, torch.Tensor), f"{what} returned {type(out).__name__}, not a tensor"
    assert out.shape == x.shape, f"{what} changed the shape {tuple(x.shape)} -> {tuple(out.shape)}"
    assert out.dtype == x.dtype, f"{what} changed the dtype {x.dtype} -> {out.dtype}"
    assert out.device == x.device, f"{what} moved the tensor {x.device} -> {out.device}"


def _flags(t: Any, n: int, dtype: torch.dtype, what: str) -> None:
    assert isinstance(t, torch.Tensor), f"{what} is {type(t).__name__}, not a tensor"
    assert tuple(t.shape) == (n,), f"{what} has shape {tuple(t.shape)}, expected ({n},)"
    assert t.dtype == dtype, f"{what} has dtype {t.dtype}, expected {dtype}"
