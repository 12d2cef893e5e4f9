"""Train a model from a spec, once: ``robustlab.train(spec) -> model`` and the ``trained`` model.

A spec names a base model (any registered torch model: its architecture and initial weights), a
dataset, a trainer and a seed. The result is cached under ``<cache>/models/trained-<hash>/`` by a
content hash of the base model's weights, the data's tensors, the trainer's full parameters
(defaults filled in), the seed, the epochs and the evaluation settings; a killed training resumes
from its last finished epoch. The model carries its provenance (``model.provenance``: spec, hashes,
per-epoch history).

Example::

    import robustlab
    clf = robustlab.train({
        "base": {"name": "small-cnn", "params": {"side": 8}},
        "data": {"name": "digits", "params": {"split": "train"}},
        "trainer": {"name": "pgd-at", "params": {"eps": 0.1}},
        "epochs": 10,
    })
    clf.provenance["history"][-1]["pgd_acc"]
"""

from __future__ import annotations

import copy
import inspect
import sys
import time
from pathlib import Path
from typing import Any

import torch

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import check_params, datasets, models, trainers
from robustlab.core.rng import seed_from
from robustlab.models.base import hash_tensors
from robustlab.training.checkpoint import TrainingFolder
from robustlab.training.loop import EpochHook, LoopConfig, fit

VERSION = 1  # bump when the loop changes what a spec trains to
DEFAULT_DATA = {"name": "fashion-mnist", "params": {"split": "train", "limit": 5000}}


def train(
    spec: dict[str, Any], *, progress: bool | None = None, on_epoch: EpochHook | None = None
) -> Any:
    """Train (or load from the cache) the model of ``spec`` and return its adapter.

    ``spec`` holds the ``trained`` model's parameters (``base``, ``data``, ``trainer``, ``seed``,
    ``epochs``, ...), or is a model spec ``{"name": "trained", "params": {...}}``. ``progress``:
    show a progress bar (default: when stderr is a terminal). ``on_epoch(row)`` is called with each
    epoch's history row after its checkpoint is written.
    """
    params = trained_params(spec)
    factory = models.get("trained")
    params = check_params(factory, params, "model 'trained'")
    bound = inspect.signature(factory).bind(**params)
    bound.apply_defaults()
    return build(**bound.arguments, progress=progress, on_epoch=on_epoch)


def trained_params(spec: Any) -> dict[str, Any]:
    """The ``trained`` model's parameters from a bare parameter mapping or a model spec."""
    if not isinstance(spec, dict):
        raise ConfigError(f"a training spec must be a mapping, got {type(spec).__name__}")
    if "name" in spec:
        if spec["name"] != "trained" or set(spec) - {"name", "params"}:
            raise ConfigError(
                "a training spec is the 'trained' model's parameters, or {name: trained, params: "
                f"...}}; got keys {sorted(spec)} with name {spec['name']!r}"
            )
        return dict(spec.get("params") or {})
    return dict(spec)


def build(
    base: dict[str, Any],
    data: dict[str, Any] | None,
    trainer: dict[str, Any] | None,
    seed: int,
    epochs: int,
    holdout: int,
    eval_eps: float | None,
    eval_steps: int,
    on_co: str,
    schedule: str = "constant",
    progress: bool | None = None,
    on_epoch: EpochHook | None = None,
) -> Any:
    """The ``trained`` model (see :func:`robustlab.models.trained.trained` for the parameters)."""
    data = DEFAULT_DATA if data is None else data
    trainer = {"name": "standard"} if trainer is None else trainer
    t_name, t_params = component(trainer, "trainers", trainers)
    d_name, d_params = component(data, "datasets", datasets)
    b_name, b_params = component(base, "models", models)
    method = trainers.create(t_name, t_params)
    clf = models.create(b_name, b_params)
    _check_trainable(clf, b_name, t_name, method)
    dset = datasets.create(d_name, d_params)
    _check_data(dset, clf, d_name, b_name)
    if eval_eps is None:
        eval_eps = getattr(method, "eps", None)
    cfg = LoopConfig(
        epochs=epochs, seed=seed, eval_eps=eval_eps, eval_norm=str(getattr(method, "norm", "inf")),
        eval_steps=eval_steps, on_co=on_co, schedule=schedule,
        progress=sys.stderr.isatty() if progress is None else progress,
    )  # fmt: skip
    key = {
        "v": VERSION,
        "base": {"name": b_name, "params": b_params, "fingerprint": clf.fingerprint()},
        "data": {"name": d_name, "params": _full(datasets, d_name, d_params),
                 "fingerprint": _data_fingerprint(dset)},
        "trainer": {"name": t_name, "params": _full(trainers, t_name, t_params)},
        "seed": seed, "epochs": epochs, "holdout": holdout, "eval_eps": eval_eps,
        "eval_steps": eval_steps, "on_co": on_co, "schedule": schedule,
    }  # fmt: skip
    folder = TrainingFolder(key)
    clf = copy.deepcopy(clf)  # never train a model object its factory may share
    clf.name = f"trained-{t_name}"
    with folder.lock():  # another process training this spec: wait, then load its result
        done = folder.load_final()
        if done is not None:
            clf.module.load_state_dict(done["model"])
            clf.module.eval()
            clf.provenance = done["provenance"]
            return clf
        train_set, hold = _split(dset, holdout, seed)
        spec = {"base": base, "data": data, "trainer": trainer, "seed": seed, "epochs": epochs}
        return _train(clf, train_set, hold, method, cfg, folder, on_epoch, spec)


def _train(
    clf: Any, train_set: Any, hold: Any, method: Any, cfg: LoopConfig, folder: TrainingFolder,
    on_epoch: EpochHook | None, spec: dict[str, Any],
) -> Any:  # fmt: skip
    """Run the loop, attach the provenance and write the final model (under the folder's lock)."""
    start = time.perf_counter()
    history = fit(clf, train_set, hold, method, cfg, folder, on_epoch)
    finish = method.finish(clf, train_set, hold) if hasattr(method, "finish") else None
    seconds = time.perf_counter() - start
    clf.module.eval()
    key = folder.key
    clf.provenance = {
        "spec": spec,
        "key": key,
        "cache": str(folder.path),
        "epochs_run": len(history),
        "history": history,
        "train_examples": len(train_set),
        "holdout_examples": 0 if hold is None else len(hold),
        "train_seconds": seconds,  # this process's wall time (a resumed run: the resumed part)
    }
    if finish is not None:
        clf.provenance["finish"] = finish
    folder.save_final({"key": key, "model": clf.module.state_dict(), "provenance": clf.provenance})
    return clf


def export(clf: Any, out: str | Path) -> dict[str, Path]:
    """Write ``clf`` to ``out/``: ``model.pt`` (state dict), ``model.torchscript.pt`` (TorchScript,
    with the adapter's normalization built in; load it anywhere with ``torch.jit.load`` or as the
    ``file`` model) and ``provenance.json``. Returns the paths."""
    import json

    from torch import nn

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    net: nn.Module = clf.module
    if clf.mean is not None or clf.std is not None:
        net = _Normalized(net, clf.mean, clf.std)
    net = copy.deepcopy(net).cpu().to(memory_format=torch.contiguous_format).eval()
    paths = {
        "state_dict": folder / "model.pt",
        "torchscript": folder / "model.torchscript.pt",
        "provenance": folder / "provenance.json",
    }
    torch.save(net.state_dict(), paths["state_dict"])
    try:
        scripted = torch.jit.script(net)
    except Exception:  # a module TorchScript cannot compile: trace it at the domain's shape
        shape = clf.domain.shape
        if shape is None or None in shape:
            raise ConfigError(
                "cannot export to TorchScript: the module does not script and the model's "
                "domain declares no input shape to trace it with"
            ) from None
        scripted = torch.jit.trace(net, torch.zeros(1, *shape))
    torch.jit.save(scripted, str(paths["torchscript"]))
    prov = getattr(clf, "provenance", {})
    paths["provenance"].write_text(json.dumps(prov, indent=1, sort_keys=True, default=str))
    return paths


class _Normalized(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, mean: Any, std: Any) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", _channels(mean, 0.0))
        self.register_buffer("std", _channels(std, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _channels(v: Any, default: float) -> torch.Tensor:
    t = torch.tensor([default]) if v is None else torch.as_tensor(v).detach().cpu().float()
    return t.view(1, -1, 1, 1)


def component(spec: Any, kind: str, registry: Any) -> tuple[str, dict[str, Any]]:
    """``(name, params)`` of a ``{name, params}`` mapping, both checked against ``registry``."""
    what = {"models": "base", "datasets": "data", "trainers": "trainer"}[kind]
    if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "params"}:
        raise ConfigError(
            f"trained model parameter {what!r} must be a mapping {{name: ..., params: {{...}}}}, "
            f"got {spec!r}"
        )
    name, params = spec["name"], spec.get("params") or {}
    if not isinstance(name, str) or not isinstance(params, dict):
        raise ConfigError(f"trained model parameter {what!r}: name must be a string and params "
                          f"a mapping, got {spec!r}")  # fmt: skip
    factory = registry.get(name)
    return name, check_params(factory, dict(params), f"{registry.kind[:-1]} {name!r}")


def _full(registry: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with every omitted default filled in (so the cache key sees default changes)."""
    try:
        sig = inspect.signature(registry.get(name))
    except (TypeError, ValueError):
        return dict(params)
    full = {
        k: p.default
        for k, p in sig.parameters.items()
        if p.default is not p.empty and isinstance(p.default, str | int | float | bool | None)
    }
    return {**full, **params}


def _check_trainable(clf: Any, base: str, trainer: str, method: Any) -> None:
    grads = getattr(getattr(clf, "capabilities", None), "grad", False)
    if not isinstance(getattr(clf, "module", None), torch.nn.Module) or (
        method.needs_grad and not grads
    ):
        need = "input gradients (white-box)" if method.needs_grad else "trainable torch weights"
        raise CapabilityError(
            f"trainer {trainer!r} needs {need}, but base model {base!r} "
            f"({type(clf).__name__}) is black-box or not a torch module; use a torch model "
            "(e.g. small-cnn, mlp, digits-cnn) as the base"
        )


def _data_fingerprint(dset: Any) -> str:
    if isinstance(dset.x, list):  # texts
        return hash_tensors([torch.as_tensor(dset.y)], "\x1f".join(map(str, dset.x)))
    return hash_tensors([torch.as_tensor(dset.x), torch.as_tensor(dset.y)])


def _check_data(dset: Any, clf: Any, data: str, base: str) -> None:
    if getattr(clf, "input_kind", "tensor") == "text":  # a text model (models/text_heads.py)
        if not isinstance(dset.x, list) or not all(isinstance(t, str) for t in dset.x):
            raise ConfigError(f"data {data!r} is not a text dataset, but base model {base!r} "
                              "classifies texts")  # fmt: skip
    elif not isinstance(dset.x, torch.Tensor) or not isinstance(dset.y, torch.Tensor):
        raise ConfigError(f"data {data!r} is not a tensor dataset (images or features): "
                          "trainers need tensor inputs and class labels")  # fmt: skip
    else:
        clf.domain.check(dset.x, f"data {data!r} for base model {base!r}")
    if len(dset.y) and (int(dset.y.min()) < 0 or int(dset.y.max()) >= clf.num_classes):
        raise ConfigError(
            f"data {data!r} has labels {int(dset.y.min())}..{int(dset.y.max())}, but base model "
            f"{base!r} has {clf.num_classes} classes"
        )


def _split(dset: Any, holdout: int, seed: int) -> tuple[Any, Any]:
    """A seeded held-out batch of ``holdout`` examples (None for 0) and the rest for training."""
    if holdout == 0:
        return dset, None
    if holdout >= len(dset):
        raise ConfigError(f"holdout {holdout} leaves no training data ({len(dset)} examples)")
    g = torch.Generator().manual_seed(seed_from("holdout", seed))
    perm = torch.randperm(len(dset), generator=g)
    return dset.take(perm[holdout:].sort().values), dset.take(perm[:holdout].sort().values)
