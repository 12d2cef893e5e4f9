"""The training loop shared by every trainer: epochs, Adam, checkpoints, evaluation, stop rules.

Per epoch: a permutation of the training set (from ``(seed, epoch)``), one optimizer step per
batch on the trainer's objective, then an evaluation on a held-out batch -- clean loss and
accuracy, FGSM accuracy and PGD loss and accuracy at ``eval_eps`` (robustlab's own attacks) --
appended to the history, and a checkpoint. All randomness of an epoch derives from ``(seed,
epoch)`` (per-example attack streams from :class:`~robustlab.core.rng.ExampleRNG`, the
permutation and torch's global generator inside a fork), so a run resumed from the checkpoint of
epoch k is the same as an uninterrupted one.

Catastrophic overfitting (Wong et al., 2020) is flagged in an epoch's history row (``co``) when
the held-out PGD accuracy falls at least :data:`CO_DROP` below its best so far while the FGSM
accuracy is at least what it was at that best epoch; ``on_co`` then warns, stops, or restores the
best epoch's weights and stops. A non-finite training loss stops with :class:`TrainingError`
naming the epoch and the first parameter that is no longer finite; the previous epoch's
checkpoint is kept.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.attacks.fgsm import FGSM
from robustlab.attacks.pgd import PGD
from robustlab.core.errors import RobustlabError
from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.core.types import ThreatModel
from robustlab.data.base import Dataset
from robustlab.training.checkpoint import TrainingFolder
from robustlab.training.trainers import Position

CO_DROP = 0.2  # held-out PGD accuracy below its best by this much (absolute) = collapse


class TrainingError(RobustlabError):
    """Training cannot go on (a non-finite loss or weights); the message names epoch and cause."""


class CatastrophicOverfittingWarning(UserWarning):
    """Held-out PGD accuracy collapsed while FGSM accuracy did not (Wong et al., 2020)."""


@dataclass
class LoopConfig:
    """What the loop needs besides the trainer: ``eval_eps`` None skips the robust evaluation."""

    epochs: int
    seed: int
    eval_eps: float | None = None
    eval_norm: str = "inf"
    eval_steps: int = 10
    on_co: str = "warn"  # warn | stop | restore
    schedule: str = "constant"  # constant | slow-start-fast-decay (see learning_rate)
    progress: bool = False


EpochHook = Callable[[dict[str, Any]], None]


def fit(
    clf: Any,
    train: Dataset,
    holdout: Dataset | None,
    trainer: Any,
    cfg: LoopConfig,
    folder: TrainingFolder,
    on_epoch: EpochHook | None = None,
) -> list[dict[str, Any]]:
    """Train ``clf.module`` in place with ``trainer`` (resuming ``folder``'s checkpoint); returns
    the per-epoch history. ``on_epoch(row)`` runs after each epoch's checkpoint is written."""
    net = clf.module
    if hasattr(trainer, "setup"):
        trainer.setup(clf, train)
    params = list(trainer.trainable(clf)) if hasattr(trainer, "trainable") else None
    frozen = _freeze(net, params)
    try:
        return _fit(clf, train, holdout, trainer, cfg, folder, on_epoch, params)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _freeze(net: torch.nn.Module, params: list[torch.nn.Parameter] | None) -> list[Any]:
    """Set ``requires_grad=False`` on the parameters of ``net`` not in ``params`` (None: all are
    trained); returns those it froze."""
    if params is None:
        return []
    if not params:
        raise TrainingError("the trainer selected no parameters to train")
    keep = {id(p) for p in params}
    frozen = [p for p in net.parameters() if id(p) not in keep and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    return frozen


def _fit(
    clf: Any, train: Dataset, holdout: Dataset | None, trainer: Any, cfg: LoopConfig,
    folder: TrainingFolder, on_epoch: EpochHook | None, params: list[Any] | None,
) -> list[dict[str, Any]]:  # fmt: skip
    net = clf.module
    opt = torch.optim.Adam(net.parameters() if params is None else params, lr=trainer.lr)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    state = folder.load_checkpoint()
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        history, best = list(state["history"]), state.get("best")
        if hasattr(trainer, "load_state_dict") and state.get("trainer") is not None:
            trainer.load_state_dict(state["trainer"])
    dev = clf.device
    x, y, ids = _inputs(train.x, dev), _tensor(train.y, dev), train.ids
    assert ids is not None
    n, bs = len(x), trainer.batch_size
    with _bar(cfg.progress) as bar:
        task = bar.add_task("training", total=(cfg.epochs - len(history)) * math.ceil(n / bs))
        for epoch in range(len(history) + 1, cfg.epochs + 1):
            if history and history[-1].get("stopped"):
                break
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                torch.manual_seed(seed_from("train", cfg.seed, epoch))
                gen = torch.Generator().manual_seed(seed_from("perm", cfg.seed, epoch))
                perm = torch.randperm(n, generator=gen)
                loss_sum = torch.zeros((), device=dev)
                correct = torch.zeros((), device=dev, dtype=torch.long)
                for i in range(0, n, bs):
                    idx = perm[i : i + bs]
                    xb, yb = _rows(x, idx, dev), y[idx.to(dev)]
                    rng = ExampleRNG.from_seed(f"train|{cfg.seed}|{epoch}", ids[idx])
                    at = Position(epoch, cfg.epochs, i // bs, math.ceil(n / bs), idx)
                    for group in opt.param_groups:  # a function of the position: resume-safe
                        group["lr"] = learning_rate(trainer.lr, cfg.schedule, at)
                    step = trainer.step(clf, xb, yb, rng, at)
                    opt.zero_grad(set_to_none=True)
                    step.loss.backward()
                    opt.step()
                    loss_sum += step.loss.detach() * len(idx)
                    correct += (step.logits.argmax(1) == yb).sum()
                    bar.update(task, advance=1, description=f"epoch {epoch}/{cfg.epochs}")
            train_loss = float(loss_sum) / n
            if not math.isfinite(train_loss):
                raise TrainingError(_diverged(epoch, train_loss, net, trainer))
            net.eval()
            row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
            row["train_acc"] = float(correct) / n
            if holdout is not None:
                row.update(evaluate(clf, holdout, cfg, seed_from("holdout", cfg.seed, epoch)))
            best = _track(history, row, net, best, cfg)
            history.append(row)
            folder.save_checkpoint(
                {"key": folder.key, "model": net.state_dict(), "optim": opt.state_dict(),
                 "history": history, "best": best,
                 "trainer": trainer.state_dict() if hasattr(trainer, "state_dict") else None}
            )  # fmt: skip
            if on_epoch is not None:
                on_epoch(dict(row))
    if history and history[-1].get("restored_epoch") is not None and best is not None:
        net.load_state_dict(best["model"])
    return history


SLOW_START = 0.6  # slow-start-fast-decay: the peak, as a fraction of all batches


def learning_rate(lr: float, schedule: str, at: Position) -> float:
    """The learning rate of the batch at ``at``: ``lr`` (``constant``), or for
    ``slow-start-fast-decay`` (S36, Jeddi et al., 2020) a linear rise from ~0 to ``lr`` over the
    first :data:`SLOW_START` of the batches and a linear fall to ~0 over the rest (batch centres:
    neither end is exactly 0, so every batch moves the weights)."""
    if schedule == "constant":
        return lr
    t = at.fraction + 0.5 / (at.epochs * at.batches)
    return lr * (t / SLOW_START if t <= SLOW_START else (1 - t) / (1 - SLOW_START))


def evaluate(
    clf: Any, data: Dataset, cfg: LoopConfig, seed: int, chunk: int = 512
) -> dict[str, Any]:
    """Clean loss/accuracy and, with ``cfg.eval_eps``, FGSM accuracy and PGD loss/accuracy on
    ``data`` (in chunks of ``chunk`` examples; per-example random streams, so chunking does not
    change the attacks)."""
    dev = clf.device
    x_all, y_all = _inputs(data.x, dev), _tensor(data.y, dev)
    assert data.ids is not None
    threat = None if cfg.eval_eps is None else ThreatModel(cfg.eval_norm, cfg.eval_eps)
    clf.module.eval()
    sums = dict.fromkeys(("clean_loss", "clean_acc", "fgsm_acc", "pgd_loss", "pgd_acc"), 0.0)
    for i in range(0, len(x_all), chunk):
        x, y = x_all[i : i + chunk], y_all[i : i + chunk]
        with torch.no_grad():
            logits = clf.logits(x)
        sums["clean_loss"] += float(F.cross_entropy(logits, y, reduction="sum"))
        sums["clean_acc"] += float((logits.argmax(1) == y).sum())
        if threat is None:
            continue
        rng = ExampleRNG.from_seed(seed, data.ids[i : i + chunk])
        x_f = FGSM()(clf, x, y, threat, rng=rng).x_adv
        x_p = PGD(steps=cfg.eval_steps, early_stop=False)(clf, x, y, threat, rng=rng).x_adv
        with torch.no_grad():
            lf, lp = clf.logits(x_f), clf.logits(x_p)
        sums["fgsm_acc"] += float((lf.argmax(1) == y).sum())
        sums["pgd_loss"] += float(F.cross_entropy(lp, y, reduction="sum"))
        sums["pgd_acc"] += float((lp.argmax(1) == y).sum())
    keys = list(sums) if threat is not None else ["clean_loss", "clean_acc"]
    return {k: sums[k] / len(x_all) for k in keys}


def overfitting(history: list[dict[str, Any]], row: dict[str, Any]) -> bool:
    """Whether ``row`` (the newest epoch) shows catastrophic overfitting relative to ``history``:
    held-out PGD accuracy at least :data:`CO_DROP` below its best earlier value, while FGSM
    accuracy is at least its value at that best epoch."""
    if row.get("pgd_acc") is None:
        return False
    earlier = [h for h in history if h.get("pgd_acc") is not None]
    if not earlier:
        return False
    top = max(earlier, key=lambda h: h["pgd_acc"])
    return top["pgd_acc"] - row["pgd_acc"] >= CO_DROP and row["fgsm_acc"] >= top["fgsm_acc"]


def _track(
    history: list[dict[str, Any]],
    row: dict[str, Any],
    net: torch.nn.Module,
    best: dict[str, Any] | None,
    cfg: LoopConfig,
) -> dict[str, Any] | None:
    """Flag overfitting in ``row`` (and act on ``cfg.on_co``); returns the best epoch kept."""
    row["co"] = overfitting(history, row)
    if row["co"]:
        top = max((h for h in history if h.get("pgd_acc") is not None), key=lambda h: h["pgd_acc"])
        warnings.warn(
            f"catastrophic overfitting at epoch {row['epoch']}: held-out PGD accuracy "
            f"{row['pgd_acc']:.3f} (best {top['pgd_acc']:.3f} at epoch {top['epoch']}), FGSM "
            f"accuracy {row['fgsm_acc']:.3f}; on_co={cfg.on_co!r}",
            CatastrophicOverfittingWarning,
            stacklevel=3,
        )
        if cfg.on_co != "warn":
            row["stopped"] = True
        if cfg.on_co == "restore" and best is not None:
            row["restored_epoch"] = best["epoch"]
    keep = cfg.on_co == "restore" and row.get("pgd_acc") is not None
    if keep and (best is None or row["pgd_acc"] > best["pgd_acc"]):
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        best = {"epoch": row["epoch"], "pgd_acc": row["pgd_acc"], "model": state}
    return best


def _diverged(epoch: int, loss: float, net: torch.nn.Module, trainer: Any) -> str:
    bad = next((name for name, p in net.named_parameters() if not torch.isfinite(p).all()), None)
    where = f"parameter {bad!r} is no longer finite" if bad else "all parameters are still finite"
    return (
        f"training diverged at epoch {epoch}: mean loss {loss} ({where}); trainer "
        f"{getattr(trainer, 'registered_name', type(trainer).__name__)!r} with lr={trainer.lr}: "
        "lower lr or check the data for non-finite values (the last good epoch's checkpoint is kept)"
    )


def _tensor(v: Any, dev: torch.device) -> torch.Tensor:
    return torch.as_tensor(v).to(dev)


def _inputs(v: Any, dev: torch.device) -> Any:
    """Tensor inputs on ``dev``; a list (texts) as it is."""
    return list(v) if isinstance(v, list) else _tensor(v, dev)


def _rows(x: Any, idx: torch.Tensor, dev: torch.device) -> Any:
    return [x[i] for i in idx.tolist()] if isinstance(x, list) else x[idx.to(dev)]


def _bar(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), disable=not enabled, transient=True,
    )  # fmt: skip
