"""Contract tests: every registered attack, perturbation and certifier, and every adapter type.

Parametrized over the registries, so a component registered later is checked automatically. Known
bugs in components are marked ``xfail`` (strict) with the reason, in :data:`KNOWN_BUGS`.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robustlab.core.registry import attacks, certifiers, datasets, models, perturbations
from robustlab.core.types import Domain, ThreatModel
from robustlab.models import CallableClassifier
from robustlab.testing import check_adapter, check_attack, check_certifier, check_perturbation

N_EXAMPLES = 64
THREATS = {"inf": ThreatModel("inf", 0.1), "2": ThreatModel("2", 0.5), "1": ThreatModel("1", 2.0)}
# cheaper settings for slow components in the contract run (they keep every code path)
FAST_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "certifiers": {"smoothing": {"n0": 64, "n": 300}},
}
# (registry, name, variant) -> reason, for bugs found by these checks (xfail, strict)
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}


def _params(kind: str, name: str, variant: str = "") -> Any:
    reason = KNOWN_BUGS.get((kind, name, variant))
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(name, variant, marks=marks, id=f"{name}-{variant}" if variant else name)


@pytest.fixture(scope="session")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    d = datasets.get("digits")(split="test")
    return d.x[:N_EXAMPLES], d.y[:N_EXAMPLES]


@pytest.fixture(scope="session")
def cnn() -> Any:
    return models.create("digits-cnn")


@pytest.fixture(scope="session")
def mlp() -> Any:
    return models.create("digits-mlp")


def _linear_logits(x: torch.Tensor) -> torch.Tensor:
    w = torch.linspace(-1, 1, 640, dtype=x.dtype, device=x.device).view(64, 10)
    return x.flatten(1) @ w.sin() * 4


ADAPTERS = {
    "torch-cnn": lambda: models.create("digits-cnn"),
    "torch-mlp": lambda: models.create("digits-mlp"),
    "sklearn-logreg": lambda: models.create("digits-logreg"),
    "callable-torch": lambda: CallableClassifier(
        _linear_logits, 10, Domain(0.0, 1.0, (1, 8, 8)), grad=True, version="linear-v1"
    ),
}


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_adapter_contract(adapter: str, digits_test: tuple[torch.Tensor, torch.Tensor]) -> None:
    check_adapter(ADAPTERS[adapter](), digits_test[0])


@pytest.mark.parametrize(
    ("name", "norm"), [_params("attacks", n, norm) for n in attacks.names() for norm in THREATS]
)
def test_attack_contract(
    name: str, norm: str, cnn: Any, digits_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_test
    check_attack(attacks.create(name), cnn, x, y, THREATS[norm])


@pytest.mark.parametrize(
    ("name", "variant"), [_params("perturbations", n) for n in perturbations.names()]
)
def test_perturbation_contract(
    name: str, variant: str, digits_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    p = perturbations.create(name)
    check_perturbation(p, digits_test[0], severities=p.severities)


@pytest.mark.parametrize(
    ("name", "variant"), [_params("certifiers", n) for n in certifiers.names()]
)
def test_certifier_contract(
    name: str, variant: str, mlp: Any, digits_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_test
    cert = certifiers.create(name, FAST_PARAMS["certifiers"].get(name))
    check_certifier(cert, mlp, x, y)
