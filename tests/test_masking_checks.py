"""The report's gradient-masking checks (Carlini et al., 2019) on real models: a digits CNN passes
them; the same CNN behind an input quantiser (zero gradients: the textbook masked defence) is
flagged, because Square (black-box), an unbounded epsilon and a transfer attack from an undefended
CNN expose what FGSM/PGD cannot. The registered ``quantized-input`` defence is flagged without
BPDA (also by its own row) and passes with it; ``noisy-input`` is flagged when attacked without
EOT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.core.registry import models
from robustlab.report.build import build_report
from robustlab.report.html import render
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Quantised(torch.nn.Module):
    """Rounds inputs to 4 grey levels before the network: gradients through it are zero."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 3) / 3)


def _masked() -> Any:
    from robustlab.models.torch_adapter import TorchClassifier

    base = models.create("digits-cnn")
    return TorchClassifier(Quantised(base.module), 10, base.domain, name="quantised-digits-cnn")


if "quantised-digits-cnn" not in models:
    models.register("quantised-digits-cnn")(_masked)

SUITE = """
name: masking
models: [{model}]
data: {{name: digits, params: {{split: test, test_fraction: 0.1}}}}
probes:
  - {{kind: attack, name: fgsm, levels: [0.1, 0.3, 0.5]}}
  - {{kind: attack, name: pgd, params: {{steps: 10}}, levels: [0.1, 0.3, 0.5]}}
  - {{kind: attack, name: square, params: {{n_queries: 200}}, levels: [0.1, 0.3, 0.5]}}
  - {{kind: attack, name: transfer, params: {{source: {{name: digits-cnn, params: {{seed: 1, epochs: 3}}}}}},
     levels: [0.1, 0.3, 0.5]}}
"""

TRANSFER = "transfer attack no stronger than white-box"


def _section(tmp_path: Path, model: str, suite: str = SUITE) -> tuple[dict[str, Any], str]:
    st = Store(tmp_path / "run.db")
    spec = model if model.startswith("{") else f"{{name: {model}}}"
    rid = run_suite(Suite.from_yaml(suite.format(model=spec)), st, progress=False)
    content = build_report(st, rid)
    st.engine.dispose()
    return content["extensions"]["masking"]["data"], render(content)


def _verdicts(data: dict[str, Any], check: str) -> list[bool | None]:
    return [r["ok"] for r in data["rows"] if r["check"] == check]


def test_a_plain_cnn_passes_every_check(tmp_path: Path) -> None:
    data, html = _section(tmp_path, "digits-cnn")
    assert data["flagged"] == []
    checks = {r["check"] for r in data["rows"]}
    assert len(checks) == 5 and all(r["ok"] is True for r in data["rows"]), data["rows"]
    assert _verdicts(data, TRANSFER) == [True] * 3
    assert _verdicts(data, "iterative attack at least as strong as single-step") == [True] * 3
    assert "Gradient-masking checks" in html and "No check flagged" in html


def test_a_quantised_input_defence_is_flagged(tmp_path: Path) -> None:
    data, html = _section(tmp_path, "quantised-digits-cnn")
    assert data["flagged"] == ["quantised-digits-cnn"]
    assert False in _verdicts(data, "white-box attack at least as strong as black-box")
    assert _verdicts(data, "accuracy near 0 at an unbounded epsilon") == [False]
    assert False in _verdicts(data, TRANSFER)  # the undefended CNN's examples fool it better
    assert "Possible gradient masking for quantised-digits-cnn" in html


QUANTIZED = "{{name: quantized-input, label: q, params: {{base: {{name: digits-cnn}}, levels: 8, bpda: {}}}}}"


@pytest.mark.parametrize("bpda", [False, True])
def test_registered_quantized_defence_is_flagged_without_bpda_only(
    tmp_path: Path, bpda: bool
) -> None:
    data, html = _section(tmp_path, QUANTIZED.format(str(bpda).lower()))
    bpda_rows = _verdicts(data, "non-differentiable step attacked with BPDA")
    assert bpda_rows and set(bpda_rows) == {bpda}
    if bpda:  # honest: BPDA-PGD is the strongest attack, transfer and Square are not stronger
        assert data["flagged"] == [], data["rows"]
        assert _verdicts(data, TRANSFER) == [True] * 3
    else:
        assert data["flagged"] == ["q"]
        assert False in _verdicts(data, TRANSFER)
        assert "attacked without BPDA" in html


EOT_SUITE = """
name: eot
models:
  - {{name: noisy-input, label: eot1, params: {{base: {base}, sigma: 0.3, eot: 1}}}}
  - {{name: noisy-input, label: eot16, params: {{base: {base}, sigma: 0.3, eot: 16}}}}
data: {{name: digits, params: {{split: test}}}}
probes:
  - {{kind: attack, name: pgd, params: {{steps: 10}}, levels: [0.2]}}
"""

NOISE_CNN = (
    "{name: trained, params: {base: {name: small-cnn, params: {side: 8}}, data: {name: digits, "
    "params: {split: train}}, trainer: {name: noise, params: {sigma: 0.3, lr: 0.003}}, epochs: 5, "
    "holdout: 128}}"
)


def test_runner_attacks_randomized_defences_with_eot(tmp_path: Path) -> None:
    """The runner hands PGD the EOT view of a randomized model by itself (``eot: 16``): lower
    accuracy than one draw per step (``eot: 1``), which the report flags."""
    st = Store(tmp_path / "eot.db")
    suite = Suite.from_yaml(EOT_SUITE.format(base=NOISE_CNN))
    rid = run_suite(suite, st, progress=False)
    df = st.records(rid)
    content = build_report(st, rid)
    st.engine.dispose()
    att = df[df["kind"] == "attack"].groupby("model")["correct"].mean()
    assert att["eot1"] >= att["eot16"] + 0.08, att  # measured 0.483 vs 0.303
    data = content["extensions"]["masking"]["data"]
    rows = {
        r["model"]: r for r in data["rows"] if r["check"] == "randomized defence attacked with EOT"
    }
    assert rows["eot1"]["ok"] is False and rows["eot16"]["ok"] is True
    assert "averaged over 16 draws" in rows["eot16"]["detail"]
    assert data["flagged"] == ["eot1"]
