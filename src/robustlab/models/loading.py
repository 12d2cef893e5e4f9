"""Loading model files safely: pickles are refused unless the user explicitly allows them."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from robustlab.core.errors import ConfigError, UnsafeFileError
from robustlab.core.types import Domain

_PICKLE_HINT = (
    "it would be unpickled, which can run arbitrary code; pass allow_pickle=True "
    "(CLI: --allow-pickle) only if you trust the file"
)


def load_model_file(
    path: str | Path,
    *,
    num_classes: int | None = None,
    domain: Domain | None = None,
    allow_pickle: bool = False,
) -> Any:
    """Load a classifier from a file and wrap it in an adapter.

    * TorchScript archives (``torch.jit.save``) -> :class:`TorchClassifier` (safe).
    * ONNX files -> a callable adapter over ``onnxruntime`` (if installed).
    * A pickled ``nn.Module`` (``torch.save(model)``) or scikit-learn pickle (``.pkl``/``.joblib``)
      -> refused with :class:`UnsafeFileError` unless ``allow_pickle=True``.
    """
    from robustlab.models.sklearn_adapter import SklearnClassifier
    from robustlab.models.torch_adapter import TorchClassifier

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"model file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix in (".pkl", ".pickle", ".joblib"):
        if not allow_pickle:
            raise UnsafeFileError(f"refusing to load {p.name}: {_PICKLE_HINT}")
        obj = _unpickle(p)
        if isinstance(obj, torch.nn.Module):
            return TorchClassifier(obj, _need_classes(num_classes, p), domain)
        return SklearnClassifier(obj, domain)
    if suffix == ".onnx":
        return _onnx(p, _need_classes(num_classes, p), domain)
    if suffix in (".pt", ".pth", ".ts"):
        if not zipfile.is_zipfile(p):
            raise UnsafeFileError(f"cannot read {p.name}: not a TorchScript or torch archive")
        try:
            module = torch.jit.load(str(p), map_location="cpu")
        except RuntimeError:
            module = _torch_pickle(p, allow_pickle)
        return TorchClassifier(module, _need_classes(num_classes, p), domain)
    raise ConfigError(
        f"unknown model file type {suffix!r} ({p.name}); use .pt (TorchScript), .onnx, or .pkl"
    )


def _need_classes(num_classes: int | None, p: Path) -> int:
    if num_classes is None:
        raise ConfigError(
            f"model file {p.name}: give num_classes (it cannot be read from the file)"
        )
    return num_classes


def _torch_pickle(p: Path, allow_pickle: bool) -> torch.nn.Module:
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - weights-only refused: it holds pickled code
        if not allow_pickle:
            raise UnsafeFileError(f"refusing to load {p.name}: {_PICKLE_HINT}") from None
        obj = _unpickle(p)
    if not isinstance(obj, torch.nn.Module):
        raise ConfigError(
            f"{p.name} holds a {type(obj).__name__} (a state dict?), not a model: build the module "
            "in Python, load_state_dict it and wrap it in TorchClassifier, or save it with torch.jit"
        )
    return obj


def _unpickle(p: Path) -> Any:
    """Unpickle a file the user explicitly trusted (allow_pickle=True)."""
    if zipfile.is_zipfile(p):
        return torch.load(p, map_location="cpu", weights_only=False)  # user opted in
    with open(p, "rb") as f:
        try:
            return pickle.load(f)  # user opted in via allow_pickle
        except Exception as e:  # noqa: BLE001
            raise UnsafeFileError(f"cannot read {p.name}: {e}") from None


def _onnx(p: Path, num_classes: int, domain: Domain | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(
            "loading .onnx models needs onnxruntime: pip install onnxruntime"
        ) from None
    from robustlab.models.callable_adapter import CallableClassifier

    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run(None, {name: x.detach().cpu().numpy()})[0])

    version = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return CallableClassifier(run, num_classes, domain, version=version)
