"""The ``noisy-labels`` dataset transform on real data (digits, Fashion-MNIST): exact corruption
counts, clean labels kept, ELR's symmetric definition, the asymmetric class maps, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.data.base import Dataset
from robustlab.data.label_noise import DIGIT_FLIPS, FASHION_FLIPS, count, default_flips, inject

DIGITS = {"name": "digits", "params": {"split": "train"}}
FASHION = {"name": "fashion-mnist", "params": {"split": "train", "limit": 3000}}


def noisy(data: dict, **params: object) -> Dataset:
    return datasets.create("noisy-labels", {"data": data, **params})


@pytest.mark.parametrize("data", [DIGITS, FASHION], ids=["digits", "fashion"])
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6, 1.0])
def test_symmetric_other_flips_exactly_round_rate_n(data: dict, rate: float) -> None:
    clean = datasets.create(data["name"], data["params"])
    d = noisy(data, kind="symmetric", rate=rate, draw="other", seed=3)
    flipped = d.y != d.fields["clean_y"]
    assert int(flipped.sum()) == count(rate, len(d)) == math.floor(rate * len(d) + 0.5)
    assert torch.equal(d.fields["clean_y"], clean.y)  # clean labels kept
    assert torch.equal(d.x, clean.x) and torch.equal(d.ids, clean.ids)
    assert d.meta["label_noise"] == ["flipped" if f else "kept" for f in flipped.tolist()]
    assert d.meta["label"] == clean.meta["label"] and d.classes == clean.classes


def test_symmetric_any_is_elr_definition_round_rate_n_redrawn_from_all_classes() -> None:
    """ELR's code redraws round(rate n) labels uniformly from ALL K classes: the wrong ones are
    Binomial(m, (K - 1) / K), and the redrawn labels are uniform over the classes."""
    d = noisy(FASHION, kind="symmetric", rate=0.4, seed=0)  # draw: any is the default
    n, k, m = len(d), 10, count(0.4, len(d))
    wrong = int((d.y != d.fields["clean_y"]).sum())
    mean, sd = m * (k - 1) / k, math.sqrt(m * (k - 1) / k**2)
    assert abs(wrong - mean) < 4 * sd, (wrong, mean, sd)
    assert wrong < m  # some redraws hit the true class: fewer wrong labels than redrawn ones
    # the same redraw, computed independently: one seeded permutation, then randint over K
    from robustlab.core.rng import seed_from

    g = torch.Generator().manual_seed(seed_from("label-noise", "symmetric", 0))
    pick = torch.randperm(n, generator=g)[:m]
    draws = torch.randint(k, (m,), generator=g)
    expect = d.fields["clean_y"].clone()
    expect[pick] = draws
    assert torch.equal(d.y, expect)
    counts = torch.bincount(draws, minlength=k).double()  # chi-square vs uniform, 9 dof
    chi2 = float(((counts - m / k) ** 2 / (m / k)).sum())
    assert chi2 < 33.7  # p = 1e-4


def test_noise_is_a_pure_function_of_seed() -> None:
    a = noisy(DIGITS, rate=0.4, seed=1)
    b = noisy(DIGITS, rate=0.4, seed=1)
    c = noisy(DIGITS, rate=0.4, seed=2)
    assert torch.equal(a.y, b.y) and not torch.equal(a.y, c.y)


@pytest.mark.parametrize(
    ("data", "flips"), [(DIGITS, DIGIT_FLIPS), (FASHION, FASHION_FLIPS)], ids=["digits", "fashion"]
)
def test_asymmetric_flips_round_rate_n_c_of_each_source_class_to_its_target(
    data: dict, flips: dict[int, int]
) -> None:
    d = noisy(data, kind="asymmetric", rate=0.3, seed=0)
    clean, y = d.fields["clean_y"], d.y
    for c in range(10):
        members = clean == c
        moved = members & (y != clean)
        if c in flips:
            assert int(moved.sum()) == count(0.3, int(members.sum()))
            assert bool((y[moved] == flips[c]).all())
        else:
            assert int(moved.sum()) == 0


def test_built_in_maps_follow_the_class_names() -> None:
    fm = datasets.create("fashion-mnist", {"limit": 10})
    assert default_flips(fm) == FASHION_FLIPS
    assert [fm.classes[s] + "->" + fm.classes[t] for s, t in sorted(FASHION_FLIPS.items())] == [
        "t-shirt/top->shirt", "pullover->coat", "sandal->sneaker", "shirt->t-shirt/top",
    ]  # fmt: skip
    assert (
        default_flips(Dataset(torch.zeros(2, 1), torch.tensor([0, 1]), classes=["a", "b"])) is None
    )


def test_user_flips_and_take_keep_clean_labels() -> None:
    d = noisy(DIGITS, kind="asymmetric", rate=1.0, flips={0: 1})
    zeros = d.fields["clean_y"] == 0
    assert bool((d.y[zeros] == 1).all()) and torch.equal(d.y[~zeros], d.fields["clean_y"][~zeros])
    part = d.take([0, 5, 7])
    assert torch.equal(part.fields["clean_y"], d.fields["clean_y"][[0, 5, 7]])


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="rate"):
        noisy(DIGITS, rate=1.5)
    with pytest.raises(ConfigError, match="kind"):
        noisy(DIGITS, kind="pair")
    with pytest.raises(ConfigError, match="dataset spec"):
        noisy({"name": "digits", "split": "train"})
    with pytest.raises(ConfigError, match="did you mean"):
        noisy({"name": "digit"})
    with pytest.raises(ConfigError, match="class 12"):
        noisy(DIGITS, kind="asymmetric", flips={3: 12})
    with pytest.raises(ConfigError, match="maps to itself"):
        inject(torch.tensor([0, 1]), 2, "asymmetric", 0.5, flips={1: 1})
    with pytest.raises(ConfigError, match="asymmetric"):
        noisy(DIGITS, kind="symmetric", flips={0: 1})
    with pytest.raises(ConfigError, match="noise_rate"):
        noisy(DIGITS, noise_rate=0.2)
