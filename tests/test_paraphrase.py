"""LLM paraphrase perturbation with the local SmolLM2 model (real generation, cached)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("xllamacpp")

from robustlab.core.registry import perturbations  # noqa: E402
from robustlab.core.rng import ExampleRNG  # noqa: E402
from robustlab.testing import check_perturbation  # noqa: E402

HEADLINES = [
    "Ad sales boost Time Warner profit",
    "Dollar gains on Greenspan speech",
    "High fuel prices hit BA's profits",
    "Pernod takeover talk lifts Domecq",
]


def test_paraphrase_rewords_deterministically():
    p = perturbations.create("paraphrase")
    rng = ExampleRNG.from_seed(0, torch.arange(len(HEADLINES)))
    out = p(HEADLINES, 1, rng)
    assert len(out) == len(HEADLINES) and all(isinstance(o, str) and o for o in out)
    assert sum(o != h for o, h in zip(out, HEADLINES, strict=True)) >= 2  # most are reworded
    assert p(HEADLINES, 1, rng) == out  # greedy + cache: identical
    assert p(HEADLINES, 0, rng) == HEADLINES  # severity 0 is the identity
    check_perturbation(p, HEADLINES, severities=[1])  # order/subset invariance, no mutation
