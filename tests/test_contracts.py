"""Contract tests: every registered attack, perturbation and certifier, and every adapter type.

Parametrized over the registries, so a component registered later is checked automatically. Known
bugs in components are marked ``xfail`` (strict) with the reason, in :data:`KNOWN_BUGS`.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robustlab.core.registry import attacks, certifiers, datasets, models, perturbations
from robustlab.core.types import VARIANT, Domain, ThreatModel
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
        "transfer": {
            "source": {"name": "digits-mlp"},
            "attack": {"name": "pgd", "params": {"steps": 5}},
        },
        "oracle-bounded": {
            "oracle": {"name": "digits-mlp"},
            "attack": {"name": "pgd", "params": {"steps": 5}},
        },
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


def _photo_crops() -> torch.Tensor:
    """Eight 48x48 RGB crops of scikit-learn's two bundled photos (china.jpg, flower.jpg)."""
    from sklearn.datasets import load_sample_images

    crops = [
        torch.from_numpy(img[r : r + 192 : 4, c : c + 192 : 4].copy())
        for img in load_sample_images().images
        for r, c in ((40, 60), (200, 300), (40, 420), (220, 100))
    ]
    return torch.stack(crops).permute(0, 3, 1, 2).float().div(255).contiguous()


def _texts() -> list[str]:
    """Real English sentences with what text perturbations edit (a person name, a number,
    contractions): standard-library docstrings and the Zen of Python (``this.py``, by Tim Peters)."""
    import codecs
    import importlib
    import importlib.util
    import pathlib

    docs = [
        (importlib.import_module(m).__doc__ or m).strip().splitlines()[0]
        for m in ("json", "csv", "re", "heapq", "bisect", "shutil", "gzip", "uuid", "string")
    ]
    src = pathlib.Path(importlib.util.find_spec("this").origin or "").read_text()
    zen = codecs.decode(src.split('"""')[1], "rot13").strip().splitlines()
    # a few aphorisms joined into paragraphs, so edit rates of 0.1 .. 0.5 differ in words edited
    paragraphs = [" ".join(zen[i : i + 4]) for i in range(0, len(zen), 4)]
    # paragraphs with numbers, and credits (person names) of three modules
    found = [
        " ".join(par.split())
        for m, key in (
            ("smtplib", "RFC 821"),
            ("timeit", "number of loops"),
            ("random", "period is"),
        )
        for par in (importlib.import_module(m).__doc__ or "").split("\n\n")
        if key in par
    ]
    credits = [importlib.import_module(m).__credits__ for m in ("pydoc", "tokenize", "tarfile")]
    return docs + paragraphs + found + [" ".join(c.split()) for c in credits]


@pytest.fixture(scope="session")
def modality_inputs(digits_test: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Real inputs per modality: digits and RGB photo crops, English sentences, HumanEval."""

    def code() -> list[dict[str, Any]]:
        from robustlab.code.problems import load_humaneval

        return load_humaneval(partial=True)[:12]

    return {"image": digits_test[0], "photo": _photo_crops(), "text": _texts(), "code": code}


# Severity: the contract checks that the output's distance from the input grows with severity
# (non-strictly) and that the top severity is farther than the bottom one. Exceptions, with why:
SEVERITY_IS_NOT_A_STRENGTH = {
    "paraphrase": "severity 1 is the greedy paraphrase, s >= 2 numbers sampled variants",
    # and every perturbation whose level_domain is VARIANT (code: ReCode's variant seeds)
}
SEVERITY_NOT_MONOTONE = {
    # (name, input) -> reason; the top severity must still be farther than the bottom one
    ("saturate", "photo"): "ImageNet-C's table scales saturation by 0.3, 0.1, 2, 5, 20: severity 2 "
    "desaturates more than 1 and 3 changes less than 2",
    (
        "frost",
        "image",
    ): "ImageNet-C's (image, frost) weights (1, .4), (.8, .6), (.7, .7), (.65, .7), "
    "(.6, .75): severity 4 keeps the frost weight of 3 and lowers the image's",
    ("frost", "photo"): "as for digits: ImageNet-C's weights at severity 4",
    (
        "glass_blur",
        "image",
    ): "ImageNet-C's (sigma, delta, iterations) table has 2 pixel-swap rounds at "
    "severity 1, 1 at severity 2 (and 3 at 3, 2 at 4)",
    ("glass_blur", "photo"): "as for digits: ImageNet-C's iteration counts 2, 1, 3, 2, 2",
    ("snow", "photo"): "ImageNet-C's snow table: severity 3 has fewer, larger flakes than 2",
    ("spatter", "image"): "ImageNet-C's spatter is water at severities 1-3 and mud at 4-5",
    (
        "defocus_blur",
        "image",
    ): "the disk radius (3 .. 10 px) outgrows the 8x8 digits at severity 4: "
    "the blur saturates to the image's mean (monotone on the photos)",
    (
        "object_rotate",
        "image",
    ): "the pixel distance of a turn is not monotone in its angle: 180 deg "
    "of a near-symmetric digit is closer than 90 deg (monotone up to 90)",
    ("synonym", "text"): "the meaning constraints (issue 18) put back edits the tagger or the "
    "similarity threshold refuses: more picked words can leave fewer edits (0.2 below 0.1 here)",
}
# perturbations that are the identity on an input by design: no severity check on that input
SEVERITY_NO_EFFECT = {
    (
        "saturate",
        "image",
    ): "a grey pixel has no saturation to change (as the reference's grey branch)",
}


def _image_inputs(name: str) -> list[str]:
    return (
        ["image", "photo"]
        if _modality(perturbations, name) == "image"
        else [_modality(perturbations, name)]
    )


@pytest.mark.parametrize(
    ("name", "variant"),
    [_params("perturbations", n, v) for n in perturbations.names() for v in _image_inputs(n)],
)
def test_perturbation_contract(name: str, variant: str, modality_inputs: dict[str, Any]) -> None:
    p = perturbations.create(name)
    x = modality_inputs[variant]
    x = x() if callable(x) else x
    # perturbations declaring level_domain VARIANT (code: ReCode's variant seeds) are not checked
    matters = name not in SEVERITY_IS_NOT_A_STRENGTH and (name, variant) not in SEVERITY_NO_EFFECT
    matters = matters and getattr(p, "level_domain", None) is not VARIANT
    check_perturbation(
        p,
        x,
        severities=p.severities[:3] if p.modality == "code" else p.severities,
        severity_matters=matters,
        monotone=matters and (name, variant) not in SEVERITY_NOT_MONOTONE,
    )


def test_severity_exceptions_are_registered_components() -> None:
    # an exception for a renamed or removed component must not linger
    for name, _ in [*SEVERITY_NOT_MONOTONE, *SEVERITY_NO_EFFECT]:
        assert name in perturbations, name
    assert set(SEVERITY_IS_NOT_A_STRENGTH) <= set(perturbations.names())


@pytest.mark.parametrize(
    ("name", "variant"), [_params("certifiers", n) for n in certifiers.names()]
)
def test_certifier_contract(
    name: str, variant: str, mlp: Any, digits_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_test
    cert = certifiers.create(name, FAST_PARAMS["certifiers"].get(name))
    check_certifier(cert, mlp, x, y)
