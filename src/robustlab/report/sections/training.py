"""Report section: how the run's trained models were made (issue 17's provenance).

A model declared as ``{name: trained, params: {base, data, trainer, seed, epochs}}`` carries its
provenance (see :mod:`robustlab.training`); the runner stores it with the run
(``environment.training``, keyed ``model#replicate``). The section shows, per trained model, the
trainer and its parameters, the base model, the data, the seed, the epochs run, the last epoch's
training accuracy and held-out clean / FGSM / PGD accuracy, and the epochs flagged for catastrophic
overfitting; and one plot of the held-out accuracies per epoch.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, pct, table

CURVES = (("clean_acc", "held-out clean"), ("fgsm_acc", "held-out FGSM"),
          ("pgd_acc", "held-out PGD"))  # fmt: skip
# plotted besides the held-out curves: the running training accuracy (on the trainer's own
# inputs, e.g. adversarial ones), the only curve of a model trained with ``holdout: 0``
TRAIN_CURVE = ("train_acc", "training (running)")


def _spec_text(spec: Any) -> str:
    """``name(k=v, ...)`` of a component spec (``{name, params}``), or its text."""
    if not isinstance(spec, dict) or "name" not in spec:
        return "" if spec is None else str(spec)
    params = spec.get("params") or {}
    inner = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{spec['name']}({inner})" if inner else str(spec["name"])


@report_sections.register("training")
class Training:
    """Provenance of the models robustlab trained for this run (trainer, data, per-epoch history)."""

    title = "Training provenance"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        training = (info.get("environment") or {}).get("training") or {}
        rows = []
        for model, prov in training.items():
            spec = prov.get("spec") or {}
            history = [h for h in prov.get("history") or [] if isinstance(h, dict)]
            last = history[-1] if history else {}
            rows.append({
                "model": model, "trainer": _spec_text(spec.get("trainer")),
                "base": _spec_text(spec.get("base")), "data": _spec_text(spec.get("data")),
                "seed": spec.get("seed"), "epochs": prov.get("epochs_run", len(history)),
                "train_examples": prov.get("train_examples"),
                "holdout_examples": prov.get("holdout_examples"),
                "train_acc": last.get("train_acc"),
                **{k: last.get(k) for k, _ in CURVES},
                "co_epochs": [h.get("epoch") for h in history if h.get("co")],
                "history": [{k: h.get(k) for k in ("epoch", "train_loss", "train_acc",
                                                    *(c for c, _ in CURVES))}
                            for h in history],
            })  # fmt: skip
        return {"rows": rows} if rows else None

    def render(self, data: dict[str, Any]) -> str:
        rows = data["rows"]
        head = ["model", "trainer", "base", "data", "seed", "epochs", "train / held-out",
                "train acc.", "held-out clean", "held-out FGSM", "held-out PGD",
                "catastrophic overfitting"]  # fmt: skip
        body = [
            [e(r["model"]), e(r["trainer"]), e(r["base"]), e(r["data"]), e(r["seed"]),
             e(r["epochs"]), f"{e(r['train_examples'])} / {e(r['holdout_examples'])}",
             pct(r["train_acc"]), pct(r["clean_acc"]), pct(r["fgsm_acc"]), pct(r["pgd_acc"]),
             ("epochs " + ", ".join(str(x) for x in r["co_epochs"])) if r["co_epochs"]
             else "not seen"]
            for r in rows
        ]  # fmt: skip
        note = (
            "<p>Models trained by robustlab for this run (cached by content hash; the history is "
            "the trainer's own held-out check after each epoch, not the suite's probes).</p>"
        )
        return note + _plot(rows) + table(head, body, num_cols=[4, 5, 7, 8, 9, 10])


def _plot(rows: list[dict[str, Any]]) -> str:
    """Held-out accuracy per epoch, one panel per trained model."""
    import matplotlib

    from robustlab.report import plots

    with_history = [r for r in rows if r["history"]]
    if not with_history:
        return ""
    with matplotlib.rc_context(plots._RC):
        fig, axes = plots._figure(len(with_history))
        for ax, r in zip(axes, with_history, strict=True):
            epochs = [h["epoch"] for h in r["history"]]
            for (key, label), marker in zip((*CURVES, TRAIN_CURVE), plots._MARKERS, strict=False):
                ys = [plots._num(h.get(key)) for h in r["history"]]
                if any(y == y for y in ys):  # a curve the trainer measured
                    ax.plot(epochs, ys, marker=marker, label=label)
            ax.set_title(r["model"])
            ax.set_ylabel("accuracy")
            plots.finish_axes(ax, epochs, "epoch")
            ax.legend(fontsize=7)
        return f"<figure>{plots._svg(fig)}</figure>"
