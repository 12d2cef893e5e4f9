"""Classification: argmax of the adapter's logits against integer labels."""

from __future__ import annotations

from typing import Any

import torch

from robustlab.core.errors import ModelOutputError
from robustlab.core.registry import tasks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel
from robustlab.data.base import Dataset
from robustlab.tasks.base import Evaluation, isolate, merge_rows, take


@tasks.register("classification")
class ClassificationTask:
    """Top-1 classification; examples whose logits are non-finite or that raise become errors."""

    def logits(self, model: Any, x: torch.Tensor) -> tuple[torch.Tensor, list[str | None]]:
        """Logits for a batch with failing examples isolated (their rows are NaN)."""
        n = x.shape[0]
        with torch.no_grad():
            chunks, errs = isolate(lambda pos: self._checked(model, take(x, pos), len(pos)), n)
        fill = torch.full((n, model.num_classes), float("nan"))
        return merge_rows(chunks, n, fill), [errs.get(i) for i in range(n)]

    @staticmethod
    def _checked(model: Any, x: torch.Tensor, n: int) -> torch.Tensor:
        out = model.logits(x)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelOutputError(f"model returned {shape} for a batch of {n}; expected ({n}, C)")
        return out.detach()

    def evaluate(self, model: Any, x: torch.Tensor, y: torch.Tensor) -> Evaluation:
        logits, errors = self.logits(model, x)
        finite = torch.isfinite(logits).all(dim=1)
        for i in torch.nonzero(~finite).flatten().tolist():
            errors[i] = errors[i] or "model returned NaN or inf for this example"
        pred = logits.argmax(dim=1).cpu()
        correct = (pred == y.cpu()).float()
        bad = torch.tensor([e is not None for e in errors])
        correct[bad] = float("nan")
        preds: list[Any] = [
            None if b else p for p, b in zip(pred.tolist(), bad.tolist(), strict=True)
        ]
        return Evaluation(preds, correct, errors)

    def perturb(self, perturbation: Any, x: torch.Tensor, level: float, rng: Any) -> torch.Tensor:
        return perturbation(x, level, rng)

    def attack(
        self, attack: Any, model: Any, data: Dataset, level: float, norm: str, rng: ExampleRNG
    ) -> tuple[Evaluation, dict[str, list[Any]]]:
        """Attack within the ``norm`` ball of radius ``level``; examples the model fails on are isolated.

        Extras per example: ``success``, ``queries``, ``distance`` (Lp) and ``clean_correct``.
        """
        threat = ThreatModel(norm, level)
        x, y, n = data.x, data.y, len(data)
        assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
        clean = self.evaluate(model, x, y)

        def run(pos: list[int]) -> Any:
            idx = torch.as_tensor(list(pos), dtype=torch.long)
            return attack(model, take(x, pos), take(y, pos), threat, rng=rng.take(idx))

        chunks, errs = isolate(run, n)
        nan = torch.full((n,), float("nan"))
        x_adv = merge_rows([(p, r.x_adv) for p, r in chunks], n, x)
        success = merge_rows([(p, r.success.float()) for p, r in chunks], n, nan)
        queries = merge_rows([(p, r.queries.float()) for p, r in chunks], n, nan)
        ev = self.evaluate(model, x_adv, y)
        for i, msg in errs.items():
            ev.error[i], ev.pred[i] = msg, None
            ev.correct[i] = float("nan")
        return ev, {
            "success": success.tolist(),
            "queries": queries.tolist(),
            "distance": threat.distance(x_adv.to(x.device), x).tolist(),
            "clean_correct": clean.correct.tolist(),
        }

    def check(self, model: Any, data: Dataset) -> None:
        """Check model/data compatibility on the first examples (shape, classes, domain)."""
        if not isinstance(data.x, torch.Tensor) or not isinstance(data.y, torch.Tensor):
            raise ModelOutputError(f"classification needs tensor inputs and labels ({data.name})")
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
