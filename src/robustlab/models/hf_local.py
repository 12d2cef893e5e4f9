"""Loading Hugging Face models from a local folder only: no hub access, safetensors by default.

Every ``hf-*`` adapter (:mod:`robustlab.models.hf_classifier`, :mod:`robustlab.models.hf_lm`,
:mod:`robustlab.models.hf_encoder`) resolves its ``path`` here first:

* the path must be an existing folder in ``save_pretrained`` layout; a string that looks like a hub
  id (``org/name``) and is not a folder is refused with a :class:`ConfigError` saying that robustlab
  never downloads (``HF_HUB_OFFLINE=1`` and ``local_files_only=True`` are set for every load);
* weights must be ``model.safetensors`` (or a sharded ``model.safetensors.index.json``); a
  pickle-format checkpoint (``pytorch_model.bin``) is refused with :class:`UnsafeFileError` unless
  ``allow_pickle=True`` (CLI ``--allow-pickle``), as for the ``file`` model;
* a tokenizer (``tokenizer.json``, ``vocab.txt``, ...) must be in the same folder.

The model fingerprint is the SHA-256 of the weight files (cached per path, size and mtime).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

from robustlab.core.errors import ConfigError, UnsafeFileError

SAFE = ("model.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FP: dict[tuple[str, int, int], str] = {}


def offline() -> None:
    """No hub access from this process (set before transformers is imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def local_dir(path: str | os.PathLike[str], what: str, *, allow_pickle: bool = False) -> Path:
    """The checked local model folder ``path`` (see the module docstring for the rules)."""
    offline()
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        if _HUB_ID.match(str(path)):
            raise ConfigError(
                f"{what}: {str(path)!r} is not a local folder; it looks like a Hugging Face hub "
                "id, and robustlab never downloads models at run time: download it elsewhere, "
                "save_pretrained() it to a folder (safetensors) and pass that folder's path"
            )
        raise ConfigError(f"{what}: model folder {str(path)!r} does not exist")
    if not p.is_dir():
        raise ConfigError(f"{what}: {str(p)!r} is a file; give the save_pretrained() folder")
    if not (p / "config.json").is_file():
        raise ConfigError(f"{what}: {p} has no config.json (not a save_pretrained() folder)")
    if not any((p / f).is_file() for f in SAFE):
        pickled = [f for f in PICKLED if (p / f).is_file()]
        if not pickled:
            raise ConfigError(f"{what}: {p} holds no weights (model.safetensors)")
        if not allow_pickle:
            raise UnsafeFileError(
                f"{what}: refusing to load {pickled[0]} in {p}: it would be unpickled, which can "
                "run arbitrary code; convert it to safetensors, or pass allow_pickle=True (CLI: "
                "--allow-pickle) only if you trust the file"
            )
    if not any((p / f).is_file() for f in TOKENIZER):
        raise ConfigError(
            f"{what}: {p} has no tokenizer (none of {', '.join(TOKENIZER)}); save the tokenizer "
            "with tokenizer.save_pretrained() into the model folder"
        )
    return p


def load_kwargs(p: Path) -> dict[str, Any]:
    """``from_pretrained`` keywords: local files only; safetensors unless only a pickle is there
    (which :func:`local_dir` has allowed explicitly by then)."""
    safe = any((p / f).is_file() for f in SAFE)
    return {"local_files_only": True, "use_safetensors": True if safe else None}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """transformers' weight-loading progress bar off for the duration (restored after)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_tokenizer(p: Path, what: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{what}: cannot load the tokenizer in {p}: {e}"[:500]) from None


def fingerprint(p: Path, extra: str = "") -> str:
    """SHA-256 (16 hex digits) of the folder's weight files and config, plus ``extra``."""
    files = [p / f for f in (*SAFE, *PICKLED, "config.json") if (p / f).is_file()]
    files += sorted(p.glob("model-*.safetensors")) + sorted(p.glob("pytorch_model-*.bin"))
    h = hashlib.sha256(extra.encode())
    for f in files:
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FP:
            fh = hashlib.sha256()
            with open(f, "rb") as fp:
                for block in iter(lambda: fp.read(1 << 22), b""):
                    fh.update(block)
            _FP[key] = fh.hexdigest()
        h.update(f.name.encode() + _FP[key].encode())
    return h.hexdigest()[:16]


class LRU:
    """A bounded map (least recently used entries go first); ``hits``/``misses`` are counted."""

    def __init__(self, size: int) -> None:
        self.size, self.hits, self.misses = size, 0, 0
        self._d: OrderedDict[Hashable, Any] = OrderedDict()

    def split(self, keys: list[Hashable]) -> list[Hashable]:
        """The distinct keys not cached (counting hits and misses per distinct key)."""
        todo = [k for k in dict.fromkeys(keys) if k not in self._d]
        self.misses += len(todo)
        self.hits += len(set(keys)) - len(todo)
        return todo

    def put(self, key: Hashable, value: Any) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def get(self, key: Hashable) -> Any:
        self._d.move_to_end(key)
        return self._d[key]

    def __len__(self) -> int:
        return len(self._d)
