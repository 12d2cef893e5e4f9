"""Backdoor diagnosis (S26, CTRL): attack success of a frequency trigger, and two poison detectors.

The registered diagnosis ``backdoor`` reads a model trained on CTRL-poisoned data
(:mod:`robustlab.data.ctrl_poisoned`, e.g. the ``ctrl-poisoned`` model) and writes:

* role ``"test"``, one record per example of the suite's data: ``pred``/``correct`` the clean
  prediction; ``extra``: ``triggered_pred`` (the prediction with the CTRL trigger planted,
  :func:`~robustlab.perturbations.image.ctrl_trigger.ctrl_trigger`), ``to_target`` (it is the
  target class) and ``nontarget`` (the true label is not the target). The **attack success rate**
  (ASR, Li et al., ICCV 2023) is the mean of ``to_target`` over the ``nontarget`` examples.
* role ``"train"``, one record per example of the poisoned training data: ``pred``/``correct``
  against its (possibly poisoned) training label; ``extra``: ``poisoned`` (ground truth),
  ``label`` (the training label), and one score per defence, **higher = more likely poisoned**:

  - ``spectral`` (Tran, Li & Madry, NeurIPS 2018, "Spectral Signatures in Backdoor Attacks"): for
    each training label c, the representations ``R_c`` (``layer``, penultimate by default) are
    centred, ``v`` is the top right singular vector of the centred matrix, and the outlier score
    of example i is ``((r_i - mean_c) . v)^2`` (the paper's score, ranked within each class;
    ``spectral_norm`` divides it by its class mean ``sigma_1^2 / n_c``, a common scale across
    classes, which ranked worse pooled on Fashion-MNIST: docs/diagnose-backdoor.md).
  - ``clustering`` (Chen et al., 2018, "Detecting Backdoor Attacks on Deep Neural Networks by
    Activation Clustering"): for each label, the centred activations are reduced to ``dims``
    dimensions (PCA; the paper uses ICA, also to 10 dimensions), split by 2-means
    (:func:`robustlab.defenses.freq_prompt.kmeans`, seeded). Chen et al. judge a class by two
    criteria, the smaller cluster's relative size and the silhouette score; the per-example score
    combines both: ``+-s_i * (1 - 2 * share_c)``, with ``s_i`` the example's silhouette value
    (Rousseeuw 1987), ``+`` in the smaller cluster and ``-`` in the larger, ``share_c`` the
    smaller cluster's share of the class (a near-even split, share ~ 0.5, scores ~ 0): examples
    firmly in a small, well separated cluster score high. ``ac_small`` (in the
    smaller cluster), ``ac_size`` (the smaller cluster's share of the class) and ``ac_flag``
    (Chen's relative-size rule: in the smaller cluster and its share <= ``ac_size_max``) are kept.

  The report computes each defence's detection AUROC (:func:`robustlab.metrics.detection.auroc`,
  poisoned = positive) from these records.

Trigger and target: from the poisoned training data's own parameters (``train``, default: the
dataset the model was trained on, read from its provenance), unless given here.

Example suite probe::

    - kind: diagnosis
      name: backdoor
      params: {layer: penultimate, dims: 10}
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import diagnoses
from robustlab.core.types import NonNegativeInt, Positive, PositiveInt, Rate
from robustlab.data.base import Dataset
from robustlab.diagnose.base import DiagnosisEnv, Scored, require_finite
from robustlab.diagnose.features import check_layers, extract
from robustlab.perturbations.image.ctrl_trigger import ctrl_trigger, resolve

DEFENCES = ("spectral", "clustering")
TRIGGER_KEYS = ("magnitude", "window", "positions", "channels")


def spectral_scores(feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Tran et al.'s outlier score per example: ``((r_i - mean_c) . v_c)^2`` with ``v_c`` the top
    right singular vector of the centred representations of its label c (float64, ``[N]``)."""
    f = feats.double()
    out = torch.zeros(len(f), dtype=torch.float64)
    for c in labels.unique().tolist():
        m = labels == c
        r = f[m] - f[m].mean(0, keepdim=True)
        if len(r) < 2:
            continue
        _, _, vh = torch.linalg.svd(r, full_matrices=False)
        out[m] = (r @ vh[0]) ** 2
    return out


def class_normalised(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``scores`` divided by their mean within each label (0 where a class scores all 0)."""
    out = torch.zeros_like(scores)
    for c in labels.unique().tolist():
        m = labels == c
        mean = scores[m].mean()
        out[m] = scores[m] / mean if float(mean) > 0 else 0.0
    return out


def silhouette(x: torch.Tensor, assign: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Per-example silhouette values ``(b - a) / max(a, b)`` (Euclidean; a = mean distance to the
    other members of its cluster, b = the smallest mean distance to another cluster; 0 for a
    singleton cluster), as ``sklearn.metrics.silhouette_samples``; exact distances, computed
    ``chunk`` rows at a time (memory ``chunk x N``)."""
    x = x.double()
    k = int(assign.max()) + 1
    onehot = torch.nn.functional.one_hot(assign, k).double()  # [N, k]
    sums = torch.cat([  # [N, k] total distance to each cluster; exact, not |a|^2 - 2ab + |b|^2
        torch.cdist(x[i : i + chunk], x, compute_mode="donot_use_mm_for_euclid_dist") @ onehot
        for i in range(0, len(x), chunk)
    ])  # fmt: skip
    counts = onehot.sum(0)
    own = counts[assign]
    a = sums.gather(1, assign[:, None]).squeeze(1) / (own - 1).clamp_min(1)
    mean_to = sums / counts.clamp_min(1)
    mean_to = mean_to.masked_fill(onehot.bool() | (counts == 0)[None, :], float("inf"))
    b = mean_to.min(1).values
    s = (b - a) / torch.maximum(a, b)
    return torch.where((own > 1) & torch.isfinite(s), s, torch.zeros_like(s))


def clustering_scores(
    feats: torch.Tensor, labels: torch.Tensor, dims: int = 10, seed: int = 0,
    size_max: float = 0.35,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Activation clustering per label (see the module docstring): ``{"score", "small", "size",
    "flag"}``, one value per example."""
    from robustlab.defenses.freq_prompt import kmeans

    n = len(feats)
    score = torch.zeros(n, dtype=torch.float64)
    small = torch.zeros(n, dtype=torch.bool)
    size = torch.zeros(n, dtype=torch.float64)
    f = feats.double()
    for c in labels.unique().tolist():
        m = labels == c
        r = f[m] - f[m].mean(0, keepdim=True)
        if len(r) < 3:
            continue
        _, _, vh = torch.linalg.svd(r, full_matrices=False)
        z = r @ vh[:dims].T
        _, assign = kmeans(z.float(), 2, seed=seed, iters=100)
        counts = torch.bincount(assign, minlength=2)
        minor = int(counts.argmin())
        in_small = assign == minor
        sil = silhouette(z, assign)
        share = float(counts.min()) / len(r)
        score[m] = torch.where(in_small, sil, -sil) * (1 - 2 * share)
        small[m] = in_small
        size[m] = share
    return {"score": score, "small": small, "size": size, "flag": small & (size <= size_max)}


@diagnoses.register("backdoor")
class Backdoor:
    """Attack success rate of the CTRL trigger and poison-detection scores of the training data
    (see the module docstring).

    ``train``: ``{name, params}`` of the poisoned training data (default: the model's training
    data, from its provenance; it must carry ``fields["poisoned"]``, as ``ctrl-poisoned`` does);
    ``target``, ``magnitude``, ``window``, ``positions``, ``channels``: the trigger (default: the
    training data's ``ctrl-poisoned`` parameters); ``layer``: the representation the defences
    read; ``dims``: activation clustering's reduced dimension; ``ac_size_max``: its relative-size
    rule; ``defences``: which of ``spectral``, ``clustering``.
    """

    def __init__(
        self,
        train: dict[str, Any] | None = None,
        target: NonNegativeInt | None = None,
        magnitude: Positive | None = None,
        window: PositiveInt | None = None,
        positions: list[list[int]] | None = None,
        channels: list[int] | None = None,
        layer: str = "penultimate",
        dims: PositiveInt = 10,
        ac_size_max: Rate = 0.35,
        defences: list[str] | None = None,
    ) -> None:
        for d in defences or []:
            if d not in DEFENCES:
                raise ConfigError(f"backdoor: unknown defence {d!r} (defences: "
                                  f"{', '.join(DEFENCES)})")  # fmt: skip
        if defences is not None and not defences:
            raise ConfigError(f"backdoor: defences is empty; name some of {', '.join(DEFENCES)}")
        self.train = train
        self.target = target
        self.magnitude = magnitude
        self.window = window
        self.positions = positions
        self.channels = channels
        self.layer = layer
        self.dims = dims
        self.ac_size_max = ac_size_max
        self.defences = defences

    # hooks called before a run ------------------------------------------------------------------

    def datasets(self) -> dict[str, Any]:
        return {"train": self.train} if self.train else {}

    def check_data(self, data: Dataset, others: dict[str, Dataset]) -> None:
        if not isinstance(data.x, torch.Tensor) or data.x.dim() != 4:
            raise ConfigError(f"backdoor: data {data.name!r} is not a batch of images")
        if not isinstance(data.y, torch.Tensor):
            raise ConfigError(f"backdoor: data {data.name!r} has no class labels")
        train = others.get("train")
        if train is not None:
            _check_train(train, tuple(data.x.shape[1:]))

    def check_model(self, model: Any) -> None:
        check_layers(model, [self.layer], "backdoor")
        if self.train is None:
            self.train_spec(model)
        t = self.trigger(model)["target"]
        if not 0 <= t < model.num_classes:
            raise ConfigError(f"backdoor: target class {t} is not in 0..{model.num_classes - 1}")

    # settings -----------------------------------------------------------------------------------

    def train_spec(self, model: Any) -> dict[str, Any]:
        """The poisoned training data: ``train``, else the model's training data (provenance)."""
        if self.train:
            return self.train
        spec = (getattr(model, "provenance", None) or {}).get("spec", {}).get("data")
        if not isinstance(spec, dict):
            raise CapabilityError(
                "backdoor: the model carries no training-data provenance (not a 'trained' or "
                "'ctrl-poisoned' model): name the poisoned training set with train: {name, params}"
            )
        return spec

    def trigger(self, model: Any) -> dict[str, Any]:
        """``{"target", "magnitude", "window", "positions", "channels"}``: the parameters given
        here, else the training data's (``ctrl-poisoned``'s) parameters and defaults."""
        import inspect

        from robustlab.data.ctrl_poisoned import ctrl_poisoned

        spec = self.train_spec(model)
        given = dict(spec.get("params") or {}) if spec.get("name") == "ctrl-poisoned" else {}
        sig = inspect.signature(ctrl_poisoned).parameters
        out = {}
        for k in ("target", *TRIGGER_KEYS):
            mine = getattr(self, k)
            out[k] = mine if mine is not None else given.get(k, sig[k].default)
        return out

    # the run ------------------------------------------------------------------------------------

    def run(self, model: Any, data: Dataset, level: float, env: DiagnosisEnv) -> list[Scored]:
        self.check_model(model)
        trig = self.trigger(model)
        target = int(trig["target"])
        train = env.data(self.train_spec(model))
        self.check_data(data, {"train": train})
        assert isinstance(data.x, torch.Tensor) and isinstance(data.y, torch.Tensor)
        resolve(tuple(data.x.shape[1:]), trig["window"], trig["positions"], trig["channels"])
        # test set: clean and triggered predictions
        logits = env.features(model, data, ())["logits"]
        require_finite(f"backdoor: logits of {data.name!r}", logits)
        pred = logits.argmax(1)
        x_trig = ctrl_trigger(data.x, trig["magnitude"], trig["window"], trig["positions"],
                              trig["channels"])  # fmt: skip
        t_pred = extract(model, x_trig, ())["logits"].argmax(1)
        y = data.y.long()
        test = Scored(
            data, pred, (pred == y).float(),
            {"triggered_pred": t_pred.tolist(), "to_target": (t_pred == target).tolist(),
             "nontarget": (y != target).tolist(), "target": [target] * len(y)},
            role="test",
        )  # fmt: skip
        # training set: defence scores
        f = env.features(model, train, (self.layer,))
        feats = f[self.layer]
        require_finite(f"backdoor: layer {self.layer!r} of {train.name!r}", feats)
        assert isinstance(train.y, torch.Tensor)
        labels = train.y.long()
        tr_pred = f["logits"].argmax(1)
        extra: dict[str, list[Any]] = {
            "poisoned": train.fields["poisoned"].tolist(),
            "label": labels.tolist(),
        }
        chosen = self.defences or list(DEFENCES)
        if "spectral" in chosen:
            raw = spectral_scores(feats, labels)
            extra["spectral"] = raw.tolist()
            extra["spectral_norm"] = class_normalised(raw, labels).tolist()
        if "clustering" in chosen:
            ac = clustering_scores(feats, labels, self.dims, env.seed % (1 << 31), self.ac_size_max)
            extra["clustering"] = ac["score"].tolist()
            extra["ac_small"] = ac["small"].tolist()
            extra["ac_size"] = ac["size"].tolist()
            extra["ac_flag"] = ac["flag"].tolist()
        tr = Scored(train, tr_pred, (tr_pred == labels).float(), extra, role="train")
        return [test, tr]


def _check_train(train: Dataset, shape: tuple[int, ...]) -> None:
    if "poisoned" not in train.fields:
        raise ConfigError(
            f"backdoor: training data {train.name!r} has no ground truth fields['poisoned']: "
            "name a ctrl-poisoned dataset"
        )
    if not isinstance(train.x, torch.Tensor) or tuple(train.x.shape[1:]) != shape:
        got = tuple(train.x.shape[1:]) if isinstance(train.x, torch.Tensor) else None
        raise ConfigError(f"backdoor: training data {train.name!r} has inputs of shape {got}, "
                          f"the scored data {shape}")  # fmt: skip
