"""The Robustness Index (S20): does an embedding organise examples by class or by a confounder?

de Jong, Marcus & Teuwen (2025), "Current Pathology Foundation Models are unrobust to Medical
Center Differences". For each example ``i`` (the query) take its ``k`` nearest neighbours ``j``
in embedding space (the example itself excluded) and sort them by class ``y`` and confounder
``c`` (the medical center; here the metadata column ``confounder``, e.g. the simulated ``site`` of
:mod:`robustlab.data.sites`):

* SO: same class, other confounder  (``y_j = y_i``, ``c_j != c_i``: biology dominates)
* OS: other class, same confounder  (``y_j != y_i``, ``c_j = c_i``: the confounder dominates)
* SS and OO (same/other on both) are counted too.

The index over a set of ``n`` queries is the ratio of the counts over all queries and neighbours::

    R_k = sum_i sum_{j in kNN(i)} [y_j = y_i][c_j != c_i]  /  sum_i sum_{j in kNN(i)} [y_j != y_i][c_j = c_i]
        = SO / OS

``R_k > 1``: biological (class) features dominate the confounder (the paper found one model of
ten just above 1). PathoROB (Kömen, de Jong et al. 2025) reports the bounded form
``SO / (SO + OS) = R_k / (1 + R_k)`` (0.5 where the two balance); both come from the same counts
(:func:`robustness_index`). Each example's record holds its counts (``extra.so``, ``os``, ``ss``,
``oo``), so the index, its bootstrap interval and per-class or per-site breakdowns are pure
functions of the records; also the k-NN majority vote's correctness for the class
(``knn_class_ok``) and for the confounder (``knn_site_ok``: the paper's observation that the
center is predicted better than the class), and the example's coordinates on the first two
principal components of the embedding (``pc1``, ``pc2``) for the report's projection plot.

Neighbours: cosine (default, as for foundation-model embeddings) or euclidean distance, exact,
by batched matrix products (no per-example loop). Ties at the k-th distance are broken by
``torch.topk``'s order (deterministic).

Example (YAML)::

    data: {name: sites, params: {data: {name: fashion-mnist, params: {limit: 2000}}}}
    probes:
      - {kind: diagnosis, name: robustness-index, params: {k: 10, confounder: site}}
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import diagnoses
from robustlab.core.types import PositiveInt
from robustlab.data.base import Dataset
from robustlab.diagnose.base import DiagnosisEnv, Scored, require_finite
from robustlab.diagnose.features import check_layers


def knn_indices(
    z: torch.Tensor, k: int, metric: Literal["cosine", "euclidean"] = "cosine", chunk: int = 1024
) -> torch.Tensor:
    """``[n, k]`` indices of each row's ``k`` nearest other rows of ``z [n, d]`` (itself
    excluded), nearest first; exact, by chunked matrix products."""
    n = z.shape[0]
    if not 0 < k < n:
        raise ConfigError(
            f"k nearest neighbours: k must lie in 1..{n - 1} for {n} examples, got {k}"
        )
    z = z.double()
    if metric == "cosine":
        z = z / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(1e-12)
    elif metric != "euclidean":
        raise ConfigError(
            f"k nearest neighbours: metric must be 'cosine' or 'euclidean', got {metric!r}"
        )
    sq = (z * z).sum(1)
    out = torch.empty(n, k, dtype=torch.long)
    for i in range(0, n, chunk):
        # squared euclidean distance (for unit rows: 2 - 2 cos, the same order as cosine)
        d = sq[i : i + chunk, None] - 2 * z[i : i + chunk] @ z.T + sq[None, :]
        rows = torch.arange(i, min(n, i + chunk))
        d[rows - i, rows] = float("inf")
        out[i : i + chunk] = d.topk(k, dim=1, largest=False).indices
    return out


def neighbour_counts(
    nbrs: torch.Tensor, y: torch.Tensor, c: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per query, the counts of its neighbours ``nbrs [n, k]`` in each cell: ``ss``, ``so``
    (same class, other confounder), ``os`` (other class, same confounder), ``oo``."""
    same_y = y[nbrs] == y[:, None]
    same_c = c[nbrs] == c[:, None]
    return {
        "ss": (same_y & same_c).sum(1),
        "so": (same_y & ~same_c).sum(1),
        "os": (~same_y & same_c).sum(1),
        "oo": (~same_y & ~same_c).sum(1),
    }


def robustness_index(so: Any, os: Any) -> dict[str, float]:
    """The index from per-query counts: ``{"index": sum(so) / sum(os)`` (the paper's R_k; inf
    when no OS neighbour), ``"normalized": sum(so) / (sum(so) + sum(os))`` (PathoROB's form; nan
    when neither)``}``."""
    s, o = float(np.asarray(so, dtype=float).sum()), float(np.asarray(os, dtype=float).sum())
    return {
        "index": s / o if o > 0 else float("inf") if s > 0 else float("nan"),
        "normalized": s / (s + o) if s + o > 0 else float("nan"),
    }


def majority(nbrs: torch.Tensor, labels: torch.Tensor, n_labels: int) -> torch.Tensor:
    """The most frequent label among each query's neighbours (ties: the smallest label)."""
    votes = torch.zeros(nbrs.shape[0], n_labels, dtype=torch.long)
    votes.scatter_add_(1, labels[nbrs], torch.ones_like(nbrs))
    return votes.argmax(1)


def pca2(z: torch.Tensor) -> torch.Tensor:
    """``[n, 2]`` coordinates on the first two principal components (signs fixed so the largest
    loading of each component is positive: deterministic)."""
    z = z.double() - z.double().mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(z, full_matrices=False)
    v = vh[:2].T  # [d, 2]
    if v.shape[1] < 2:
        v = torch.cat([v, torch.zeros(v.shape[0], 2 - v.shape[1], dtype=v.dtype)], 1)
    sign = torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))
    return z @ (v * torch.where(sign == 0, 1.0, sign))


def codes(values: list[Any]) -> tuple[torch.Tensor, list[Any]]:
    """Integer codes of a metadata column (sorted distinct values) and the values."""
    uniq = sorted(set(values), key=str)
    index = {v: i for i, v in enumerate(uniq)}
    return torch.tensor([index[v] for v in values], dtype=torch.long), uniq


@diagnoses.register("robustness-index")
class RobustnessIndex:
    """Robustness Index (de Jong et al. 2025): k-NN neighbours of the same class from another
    site (SO) vs of another class from the same site (OS) in embedding space; see the module
    docstring for the formula. ``layer``: the embedding (default ``penultimate``, or any name of
    :func:`robustlab.diagnose.features.layer_names`); ``confounder``: the metadata column."""

    def __init__(
        self,
        k: PositiveInt = 10,
        layer: str = "penultimate",
        confounder: str = "site",
        metric: Literal["cosine", "euclidean"] = "cosine",
    ) -> None:
        self.k = k
        self.layer = layer
        self.confounder = confounder
        self.metric = metric

    def check_data(self, data: Dataset, others: dict[str, Dataset]) -> None:
        if self.confounder not in data.meta:
            have = ", ".join(sorted(data.meta)) or "none"
            raise ConfigError(
                f"robustness-index: data {data.name!r} has no metadata column "
                f"{self.confounder!r} (the confounder); its columns: {have}"
            )
        if not isinstance(data.y, torch.Tensor):
            raise ConfigError(f"robustness-index: data {data.name!r} has no class labels")
        if len(set(data.meta[self.confounder])) < 2 or len(set(data.y.tolist())) < 2:
            raise ConfigError(
                f"robustness-index: data {data.name!r} needs at least 2 classes and 2 values of "
                f"{self.confounder!r} (SO and OS neighbours cannot exist otherwise)"
            )
        if not self.k < len(data):
            raise ConfigError(
                f"robustness-index: k = {self.k} needs more than {self.k} examples; "
                f"{data.name!r} has {len(data)}"
            )

    def check_model(self, model: Any) -> None:
        check_layers(model, [self.layer], "robustness-index")

    def run(self, model: Any, data: Dataset, level: float, env: DiagnosisEnv) -> list[Scored]:
        self.check_data(data, {})
        self.check_model(model)
        feats = env.features(model, data, (self.layer,))
        z, logits = feats[self.layer], feats["logits"]
        require_finite(f"robustness-index layer {self.layer!r}", z)
        assert isinstance(data.y, torch.Tensor)
        y = data.y.long()
        c, _ = codes(data.meta[self.confounder])
        nbrs = knn_indices(z, self.k, self.metric)
        counts = neighbour_counts(nbrs, y, c)
        knn_y = majority(nbrs, y, int(y.max()) + 1)
        knn_c = majority(nbrs, c, int(c.max()) + 1)
        pc = pca2(z)
        pred = logits.argmax(1)
        extra: dict[str, list[Any]] = {k: v.tolist() for k, v in counts.items()}
        extra["knn_class_ok"] = (knn_y == y).tolist()
        extra["knn_site_ok"] = (knn_c == c).tolist()
        extra["pc1"] = pc[:, 0].float().tolist()
        extra["pc2"] = pc[:, 1].float().tolist()
        return [Scored(data, pred, (pred == y).float(), extra)]
