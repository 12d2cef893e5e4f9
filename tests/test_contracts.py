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
    "certifiers": {
        "smoothing": {"n0": 64, "n": 300},
        "smoothing-sequential": {"n0": 64, "n": 1000},
        "dual-smoothing": {"n0": 64, "n": 300},
        "ibp": {"eps": 0.01},  # small enough that many examples are certified (soundness tested)
        "milp": {"eps": 0.004, "time_limit": 10.0},
    },
    # used once test_attack_contract passes FAST_PARAMS["attacks"].get(name) to attacks.create
    "attacks": {
        "apgd": {"steps": 10},
        "apgd_t": {"steps": 10, "n_targets": 2},
        "square": {"n_queries": 100},
        "hsj": {"steps": 3, "init_evals": 20, "max_evals": 50, "init_trials": 10},
        "autoattack": {
            "attacks": [
                {"name": "apgd", "steps": 10},
                {"name": "apgd_t", "steps": 10, "n_targets": 2},
                {"name": "square", "n_queries": 50},
            ]
        },
        "patch": {"steps": 20},
        "universal_patch": {"steps": 20},
        "fab": {"steps": 10, "restarts": 2},
    },
}
# (registry, name, variant) -> reason, for bugs found by these checks (xfail, strict)
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}


def _modality(registry: Any, name: str) -> str:
    return getattr(registry.get(name), "modality", "image")


# Lp-ball attacks on images are checked here; attacks with another threat model declare it
# (`threat = "patch"`, `"severity"`; ranking attacks: modality "ranking") and have their own
# contract tests (tests/test_vision_attacks.py, tests/test_ranking_attacks.py)
LP_ATTACKS = [
    n
    for n in attacks.names()
    if getattr(attacks.get(n), "threat", "lp") == "lp" and _modality(attacks, n) != "ranking"
]
OTHER_ATTACKS = sorted(set(attacks.names()) - set(LP_ATTACKS))


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
    ("name", "norm"), [_params("attacks", n, norm) for n in LP_ATTACKS for norm in THREATS]
)
def test_attack_contract(
    name: str, norm: str, cnn: Any, digits_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_test
    check_attack(attacks.create(name, FAST_PARAMS["attacks"].get(name)), cnn, x, y, THREATS[norm])


def test_every_attack_declares_its_threat_model() -> None:
    # the attacks not checked above must say why (and are checked in their own modules)
    for n in OTHER_ATTACKS:
        obj = attacks.get(n)
        assert getattr(obj, "threat", "lp") != "lp" or _modality(attacks, n) == "ranking", n


@pytest.fixture(scope="session")
def modality_inputs(digits_test: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Real inputs per modality: digits images, standard-library docstring sentences, HumanEval."""
    import importlib

    texts = [
        (importlib.import_module(m).__doc__ or m).strip().splitlines()[0]
        for m in (
            "json",
            "csv",
            "re",
            "heapq",
            "bisect",
            "shutil",
            "gzip",
            "uuid",
            "string",
            "copy",
        )
    ]

    def code() -> list[dict[str, Any]]:
        from robustlab.code.problems import load_humaneval

        return load_humaneval(partial=True)[:12]

    return {"image": digits_test[0], "text": texts, "code": code}


@pytest.mark.parametrize(
    ("name", "variant"), [_params("perturbations", n) for n in perturbations.names()]
)
def test_perturbation_contract(name: str, variant: str, modality_inputs: dict[str, Any]) -> None:
    p = perturbations.create(name)
    x = modality_inputs[_modality(perturbations, name)]
    x = x() if callable(x) else x
    check_perturbation(p, x, severities=p.severities[:3] if p.modality == "code" else p.severities)


@pytest.mark.parametrize(
    ("name", "variant"), [_params("certifiers", n) for n in certifiers.names()]
)
def test_certifier_contract(
    name: str, variant: str, mlp: Any, digits_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_test
    cert = certifiers.create(name, FAST_PARAMS["certifiers"].get(name))
    check_certifier(cert, mlp, x, y)
