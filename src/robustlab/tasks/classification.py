"""Classification: argmax of the adapter's logits against integer labels."""

from __future__ import annotations

import math
from typing import Any

import torch

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.registry import tasks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel
from robustlab.data.base import Dataset
from robustlab.tasks.base import (
    Evaluation,
    isolate,
    merge_attack_results,
    merge_rows,
    take,
    take_rng,
)


def accepted(fn: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``fields`` that ``fn`` takes as keyword arguments."""
    if not fields:
        return {}
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in fields.items() if k in params}


@tasks.register("classification")
class ClassificationTask:
    """Top-1 classification; examples whose logits are non-finite or that raise become errors."""

    def logits(
        self, model: Any, x: torch.Tensor | list[str]
    ) -> tuple[torch.Tensor, list[str | None]]:
        """Logits for a batch with failing examples isolated (their rows are NaN)."""
        logits, errors, _, _ = self._logits(model, x)
        return logits, errors

    def _logits(
        self, model: Any, x: torch.Tensor | list[str]
    ) -> tuple[torch.Tensor, list[str | None], dict[int, float], dict[str, list[Any]]]:
        """:meth:`logits` plus, for adapters that rewrite some inputs (test-time augmentation,
        ``last_augmented``), which inputs they rewrote, and the per-input columns an adapter
        declares in ``record_extra`` (read from its ``last_extra`` after each call; e.g. the
        Hugging Face classifier's ``truncated``), recorded in ``extra``."""
        n = len(x)
        augmented: dict[int, float] = {}
        declared = tuple(getattr(model, "record_extra", ()))
        extra: dict[str, dict[int, Any]] = {k: {} for k in declared}

        def run(pos: list[int]) -> torch.Tensor:
            out = self._checked(model, take(x, pos), len(pos))
            last = getattr(model, "last_augmented", None)
            if isinstance(last, torch.Tensor) and last.numel() == len(pos):
                augmented.update(zip(pos, last.float().tolist(), strict=True))
            for k in declared:
                extra[k].update(zip(pos, model.last_extra[k], strict=True))
            return out

        with torch.no_grad():
            chunks, errs = isolate(run, n)
        cols = {k: [v.get(i) for i in range(n)] for k, v in extra.items()}
        if not errs and len(chunks) == 1:  # the common case: one chunk, no failures
            return chunks[0][1], [None] * n, augmented, cols
        fill = torch.full((n, model.num_classes), float("nan"))
        return merge_rows(chunks, n, fill), [errs.get(i) for i in range(n)], augmented, cols

    @staticmethod
    def _checked(model: Any, x: torch.Tensor | list[str], n: int) -> torch.Tensor:
        out = model.logits(x)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelOutputError(f"model returned {shape} for a batch of {n}; expected ({n}, C)")
        return out.detach()

    def evaluate(self, model: Any, x: torch.Tensor | list[str], y: torch.Tensor) -> Evaluation:
        logits, errors, augmented, cols = self._logits(model, x)
        failed = errors.count(None) != len(errors)
        # one reduction: NaN and inf propagate into the sum (a huge finite sum only costs the
        # exact per-row check)
        if logits.numel() and not math.isfinite(float(logits.sum())):
            finite = torch.isfinite(logits).all(dim=1)
            for i in torch.nonzero(~finite).flatten().tolist():
                errors[i] = errors[i] or "model returned NaN or inf for this example"
                failed = True
        pred = logits.argmax(dim=1).cpu()
        correct = (pred == y.cpu()).float()
        if failed:
            bad = torch.tensor([e is not None for e in errors])
            correct[bad] = float("nan")
            preds: list[Any] = [
                None if b else p for p, b in zip(pred.tolist(), bad.tolist(), strict=True)
            ]
        else:
            preds = pred.tolist()
        extra = {"augmented": [augmented.get(i) for i in range(len(x))]} if augmented else {}
        extra |= cols  # adapter-declared columns (record_extra)
        return Evaluation(preds, correct, errors, extra, margin=logit_margins(logits, y))

    takes_fields = True  # the runner passes per-example dataset fields (masks) to perturb

    def perturb(
        self, perturbation: Any, x: torch.Tensor, level: float, rng: Any, **fields: torch.Tensor
    ) -> torch.Tensor:
        """``perturbation(x, level, rng)``, plus the dataset fields (e.g. ``mask``) that the
        perturbation's ``__call__`` accepts as keywords (others are ignored)."""
        return perturbation(x, level, rng, **accepted(perturbation, fields))

    takes_clean = True  # the runner passes the shard's clean evaluation, shared by its units

    def attack(
        self,
        attack: Any,
        model: Any,
        data: Dataset,
        level: float,
        norm: str,
        rng: ExampleRNG,
        clean: Evaluation | None = None,
    ) -> tuple[Evaluation, dict[str, list[Any]]]:
        """Attack within the ``norm`` ball of radius ``level``; examples the model fails on are isolated.

        Extras per example: ``success``, ``queries``, ``distance`` (Lp), ``clean_correct``, the
        logit margins ``margin`` (attacked input) and ``clean_margin`` (:func:`logit_margins`),
        plus the ``AttackResult.extra`` columns the attack names in ``record_extra`` (if any).
        ``clean`` is ``evaluate(model, data.x, data.y)`` if the caller has it already (the runner
        shares one per shard between the clean unit and every attack unit); else it is computed.
        """
        if isinstance(data.x, list):
            return self._attack_text(attack, model, data, level, rng, clean)
        threat = ThreatModel(norm, level)
        x, y, n = data.x, data.y, len(data)
        assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
        if clean is None:
            clean = self.evaluate(model, x, y)

        from robustlab.attacks.eot import for_attack  # EOT on randomized models

        target = for_attack(model, attack)

        def run(pos: list[int]) -> Any:
            return attack(target, take(x, pos), take(y, pos), threat, rng=take_rng(rng, pos))

        chunks, errs = isolate(run, n)
        nan = torch.full((n,), float("nan"))
        x_adv = merge_rows([(p, r.x_adv) for p, r in chunks], n, x)
        queries = merge_rows([(p, r.queries.float()) for p, r in chunks], n, nan)
        ev = self.evaluate(model, x_adv, y)
        # untargeted attacks succeed where the model is wrong on x_adv: a deferred success check
        # (gradient attacks) is read off this evaluation instead of a second forward pass
        fooled = 1 - ev.correct
        success = merge_rows(
            [(p, fooled[p] if r.deferred else r.success.float()) for p, r in chunks], n, nan
        )
        for i, msg in errs.items():
            ev.error[i], ev.pred[i] = msg, None
            ev.correct[i] = float("nan")
        # per-example extras an attack declares worth recording (``record_extra``: names of
        # AttackResult.extra columns; NaN where the attack failed)
        nan64 = torch.full((n,), float("nan"), dtype=torch.float64)
        recorded = {
            k: merge_rows([(p, r.extra[k].double().cpu()) for p, r in chunks], n, nan64).tolist()
            for k in getattr(attack, "record_extra", ())
        }
        return ev, {
            "success": success.tolist(),
            "queries": queries.tolist(),
            "distance": threat.distance(x_adv.to(x.device), x).tolist(),
            "clean_correct": clean.correct.tolist(),
            **recorded,
            **_margin_columns(ev, clean, errs),
        }

    def _attack_text(
        self,
        attack: Any,
        model: Any,
        data: Dataset,
        budget: float,
        rng: ExampleRNG,
        clean: Evaluation | None = None,
    ) -> tuple[Evaluation, dict[str, list[Any]]]:
        """Text attacks (:mod:`robustlab.attacks.text`): ``budget`` is the largest edit rate.

        Extras per example: ``success``, ``queries``, ``edit_rate`` (word-level), ``clean_correct``,
        ``margin`` / ``clean_margin`` and every column the attack adds (e.g. ``similarity``).
        """
        from robustlab.attacks.text import word_edit_rate

        x, y, n = list(data.x), data.y, len(data)
        assert isinstance(y, torch.Tensor)
        if getattr(attack, "modality", None) != "text":
            name = getattr(attack, "registered_name", type(attack).__name__)
            raise ConfigError(f"attack {name!r} does not attack texts; use a text attack")
        if not 0 <= budget <= 1:
            raise ConfigError(f"a text attack's level is an edit rate in [0, 1], got {budget}")
        if clean is None:
            clean = self.evaluate(model, x, y)

        def run(pos: list[int]) -> Any:
            return attack(model, take(x, pos), take(y, pos), budget, rng=take_rng(rng, pos))

        chunks, errs = isolate(run, n)
        x_adv, cols = merge_attack_results(chunks, x, n)
        ev = self.evaluate(model, x_adv, y)
        for i, msg in errs.items():
            ev.error[i], ev.pred[i] = msg, None
            ev.correct[i] = float("nan")
        edit = {
            "edit_rate": word_edit_rate(x, x_adv).tolist(),
            "clean_correct": clean.correct.tolist(),
        }
        return ev, cols | edit | _margin_columns(ev, clean, errs)

    def check(self, model: Any, data: Dataset) -> None:
        """Check model/data compatibility on the first examples (shape, classes, domain)."""
        if isinstance(data.x, list):
            if not all(isinstance(t, str) for t in data.x):
                raise ConfigError(f"classification of texts needs a list of strings ({data.name})")
        elif not isinstance(data.x, torch.Tensor):
            raise ModelOutputError(f"classification needs tensor or text inputs ({data.name})")
        if not isinstance(data.y, torch.Tensor):
            raise ModelOutputError(f"classification needs a tensor of labels ({data.name})")
        if isinstance(data.x, torch.Tensor):
            model.domain.check(data.x, f"data {data.name!r}")
        y_max = int(data.y.max()) if len(data) else -1
        with torch.no_grad():
            out = self._checked(model, data.x[:2], min(2, len(data)))
        if out.shape[1] != model.num_classes:
            raise ModelOutputError(
                f"model returns {out.shape[1]} scores per example but declares num_classes="
                f"{model.num_classes}"
            )
        if y_max >= out.shape[1]:
            raise ModelOutputError(
                f"model output shape {tuple(out.shape)} does not match the labels of "
                f"{data.name!r}: label {y_max} needs at least {y_max + 1} classes"
            )
        names = getattr(model, "classes", None)  # a text classifier's own label names
        if isinstance(data.x, list) and names and data.classes and len(names) != len(data.classes):
            raise ModelOutputError(
                f"model has {len(names)} labels ({', '.join(map(str, names[:6]))}) but "
                f"{data.name!r} has {len(data.classes)} classes ({', '.join(data.classes[:6])})"
            )


def logit_margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per example in float64, rounded to 4 decimals (records stay
    short; the margins are for statistics); NaN where a row is not finite or ``y`` is no class.

    Positive: correctly classified with that much room; negative: misclassified (S34's logit
    differences, :func:`robustlab.metrics.vision.logit_difference_stats`)."""
    z = logits.detach().cpu().double()
    n = len(z)
    out = torch.full((n,), float("nan"), dtype=torch.float64)
    if z.dim() != 2 or z.shape[1] < 2 or not isinstance(y, torch.Tensor) or len(y) != n or not n:
        return out
    yy = y.detach().cpu().long()
    ok = (yy >= 0) & (yy < z.shape[1])
    yc = yy.clamp(0, z.shape[1] - 1)[:, None]
    true = z.gather(1, yc).squeeze(1)
    other = z.scatter(1, yc, float("-inf")).amax(dim=1)
    m = torch.round(true - other, decimals=4)
    return torch.where(ok & torch.isfinite(m), m, out)


def _margin_columns(
    ev: Evaluation, clean: Evaluation, errs: dict[int, str]
) -> dict[str, list[Any]]:
    """Attack records' ``margin`` (on the attacked input) and ``clean_margin`` (on the clean one):
    logit margins for S34's statistics; NaN where the example failed."""
    out: dict[str, list[Any]] = {}
    for key, e in (("margin", ev), ("clean_margin", clean)):
        if e.margin is not None and len(e.margin) == len(ev.correct):
            m = e.margin.clone()
            if errs:
                m[list(errs)] = float("nan")
            out[key] = m.tolist()
    return out
