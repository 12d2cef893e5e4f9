"""The ``feature-tuned`` model: a downstream classifier on the FROZEN features of another model
(black-box tuning: linear probe, MLP tuning or NMTune, S38; :mod:`robustlab.training.nmtune`).

The features of ``data`` are read once from ``features`` (any registered torch classifier, e.g. a
``trained`` model pre-trained on noisy labels); a head is trained on them and cached under
robustlab.training's cache folder (``<cache>/models/trained-<hash>/``) by a hash of the extractor's
weights, the data's tensors, the method and its parameters and the seed. The model is the frozen
extractor followed by the head, so every probe, corruption and attack goes through both::

    models:
      - name: feature-tuned
        params:
          features: {name: trained, params: {
              base: {name: small-cnn, params: {side: 28}},
              data: {name: noisy-labels, params: {data: {name: fashion-mnist,
                     params: {split: train, limit: 5000}}, kind: symmetric, rate: 0.4}},
              epochs: 5}}
          data: {name: fashion-mnist, params: {split: test, limit: 1000}}
          method: nmtune
"""

from __future__ import annotations

import time
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models
from robustlab.core.types import NonNegative, Positive, PositiveInt, Seed
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.trained import spec_param
from robustlab.training.nmtune import FeatureExtractor, Head, Method, Tuned, fit_head
from robustlab.training.nmtune import features as read_features

VERSION = 2  # bump when fit_head changes what a spec trains to (or the provenance layout)


@models.register("feature-tuned")
def feature_tuned(
    features: spec_param("models"),  # type: ignore[valid-type]
    data: spec_param("datasets"),  # type: ignore[valid-type]
    method: Method = "nmtune",
    epochs: PositiveInt = 50,
    lr: Positive = 1e-3,
    batch_size: PositiveInt = 256,
    hidden: PositiveInt | None = None,
    mse: NonNegative = 1.0,
    cov: NonNegative = 1.0,
    svd: NonNegative = 1.0,
    top_k: PositiveInt = 5,
    scale_init: NonNegative = 1.0,
    seed: Seed = 0,
) -> TorchClassifier:
    """A head trained by ``method`` (``linear-probe``, ``mlp`` or ``nmtune``) on the frozen
    penultimate features of the model ``features`` ({name, params}) for the labelled ``data``
    ({name, params}); ``epochs`` of Adam at ``lr`` in batches of ``batch_size``; ``hidden``: the
    MLP width (default: the feature dimension) and ``scale_init`` the initial per-dimension scale
    of its residual branch; ``mse``, ``cov``, ``svd``, ``top_k``: NMTune's regulariser weights and
    its number of dominant singular values (the parameters a method does not use are left out of
    its cache key). Cached; ``provenance`` holds
    the per-epoch losses."""
    from robustlab.models.base import hash_tensors
    from robustlab.training.api import _full, component
    from robustlab.training.checkpoint import TrainingFolder

    b_name, b_params = component(features, "models", models)
    d_name, d_params = component(data, "datasets", datasets)
    base = models.create(b_name, b_params)
    dset = datasets.create(d_name, d_params)
    if not isinstance(dset.x, torch.Tensor) or not isinstance(dset.y, torch.Tensor):
        raise ConfigError(f"feature-tuned: data {d_name!r} is not a tensor dataset with class labels")  # fmt: skip
    base.domain.check(dset.x, f"data {d_name!r} for the features of model {b_name!r}")
    k = len(dset.classes) if dset.classes else int(dset.y.max()) + 1
    extractor = FeatureExtractor(base)
    hp = {"method": method, "epochs": epochs, "lr": lr, "batch_size": batch_size,
          "hidden": hidden, "mse": mse, "cov": cov, "svd": svd, "top_k": top_k,
          "scale_init": scale_init, "seed": seed}  # fmt: skip
    unused = {"linear-probe": ("hidden", "mse", "cov", "svd", "top_k", "scale_init"),
              "mlp": ("mse", "cov", "svd", "top_k"), "nmtune": ()}[method]  # fmt: skip
    hp = {k: v for k, v in hp.items() if k not in unused}
    key = {
        "v": VERSION, "kind": "feature-tuned",
        "features": {"name": b_name, "params": b_params, "fingerprint": base.fingerprint()},
        "data": {"name": d_name, "params": _full(datasets, d_name, d_params),
                 "fingerprint": hash_tensors([dset.x, dset.y])},
        **hp,
    }  # fmt: skip
    folder = TrainingFolder(key)
    head = Head(extractor.dim, k, method, hidden or extractor.dim, scale_init)
    with folder.lock():
        done = folder.load_final()
        if done is not None:
            head.load_state_dict(done["model"])
            provenance = done["provenance"]
        else:
            start = time.perf_counter()
            f = read_features(base, dset.x)
            head, history = fit_head(f, dset.y, k, **hp)
            trainer = {
                "name": f"feature-tuned/{method}",
                "params": {k_: v for k_, v in hp.items() if k_ not in ("method", "seed")},
            }
            provenance = {  # the ``trained`` model's layout, so the report's training section reads it
                "spec": {"base": features_spec(features), "data": data, "trainer": trainer,
                         "seed": seed, "epochs": epochs},
                "key": key, "cache": str(folder.path), "epochs_run": len(history),
                "history": [{**row, "train_loss": row["loss"]} for row in history],
                "train_examples": len(dset), "holdout_examples": 0,
                "feature_dim": extractor.dim, "train_seconds": time.perf_counter() - start,
            }  # fmt: skip
            folder.save_final({"key": key, "model": head.state_dict(), "provenance": provenance})
    net = Tuned(extractor, head.to(base.device).eval())
    clf = TorchClassifier(net, k, base.domain, device=base.device, name=f"feature-tuned-{method}")
    clf.provenance = provenance
    return clf


def features_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The extractor spec as given (JSON-able), for the provenance."""
    return {"name": spec["name"], "params": dict(spec.get("params") or {})}
