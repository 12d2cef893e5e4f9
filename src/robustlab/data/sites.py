"""Acquisition "sites" as a confounder: any registered image dataset with a per-site signature.

Medical images carry the signature of the center that acquired them (staining, scanner; S20,
de Jong et al. 2025, "Current Pathology Foundation Models are unrobust to Medical Center
Differences"). This dataset simulates it on real images: each example is assigned to one of the
``sites``, and its image gets that site's signature, a registered perturbation at a fixed severity
(default: none, contrast 2, brightness 2, gaussian_blur 1). The site is the metadata column
``site`` (its name, e.g. ``"contrast@2"``), so the Robustness Index diagnosis
(:mod:`robustlab.diagnose.robustness_index`) and slices can read it.

Assignment: with probability ``correlation`` an example goes to the site of its class
(``class mod len(sites)``: site and class confounded), otherwise to a uniformly drawn site; both
draws are seeded by ``seed`` (``correlation: 0``, the default, makes site independent of class).
``target: site`` replaces the labels by the site index (classes = site names): a model trained on
it learns the confounder, the reference for an embedding organised by site.

Example::

    d = datasets.create("sites", {"data": {"name": "fashion-mnist", "params": {"limit": 1000}}})
    d.meta["site"][:3]                         # e.g. ['brightness@2', 'none', 'gaussian_blur@1']

    # YAML: training data where site predicts class 90 % of the time
    data: {name: sites, params: {data: {name: fashion-mnist, params: {split: train}},
                                 correlation: 0.9}}
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, perturbations
from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.core.types import Rate, Seed
from robustlab.data.base import Dataset

DEFAULT_SITES: list[dict[str, Any]] = [
    {"name": "none"},
    {"name": "contrast", "severity": 2},
    {"name": "brightness", "severity": 2},
    {"name": "gaussian_blur", "severity": 1},
]


def site_name(site: dict[str, Any]) -> str:
    """The display name of a site signature: ``"none"`` or ``"<perturbation>@<severity>"``."""
    if site.get("name") == "none":
        return "none"
    return f"{site['name']}@{float(site.get('severity', 1)):g}"


def _check_sites(sites: Any) -> list[dict[str, Any]]:
    if not isinstance(sites, list) or len(sites) < 2:
        raise ConfigError(f"sites: give at least 2 site signatures, got {sites!r}")
    out = []
    for s in sites:
        if not isinstance(s, dict) or "name" not in s or set(s) - {"name", "severity", "params"}:
            raise ConfigError(
                f"sites: each site is {{name: <perturbation or none>, severity: ..., params: "
                f"{{...}}}}, got {s!r}"
            )
        if s["name"] != "none":
            perturbations.get(s["name"])  # unknown names raise with a suggestion
        out.append(dict(s))
    names = [site_name(s) for s in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"sites: two sites have the same signature: {names}")
    return out


def assign_sites(y: torch.Tensor, n_sites: int, correlation: float, seed: int) -> torch.Tensor:
    """Site index per example (see the module docstring): a pure, seeded function of the labels."""
    if not 0 <= correlation <= 1:
        raise ConfigError(f"sites: correlation must lie in [0, 1], got {correlation!r}")
    g = torch.Generator().manual_seed(seed_from("sites", seed))
    uniform = torch.randint(n_sites, (len(y),), generator=g)
    tied = torch.rand(len(y), generator=g) < correlation
    return torch.where(tied, y.long() % n_sites, uniform)


@datasets.register("sites")
def sites(
    data: dict[str, Any],
    sites: list[dict[str, Any]] | None = None,
    correlation: Rate = 0.0,
    target: Literal["class", "site"] = "class",
    seed: Seed = 0,
) -> Dataset:
    """``data`` (a dataset spec ``{name, params}`` of images) with each example's site signature
    applied; metadata ``site``; ``target: site`` makes the site the label. See the module
    docstring."""
    if not isinstance(data, dict) or "name" not in data or set(data) - {"name", "params"}:
        raise ConfigError(
            f"sites: data must be a dataset spec {{name: ..., params: {{...}}}}, got {data!r}"
        )
    specs = _check_sites(DEFAULT_SITES if sites is None else sites)
    base = datasets.create(data["name"], data.get("params") or {})
    if not isinstance(base.x, torch.Tensor) or base.x.dim() != 4:
        raise ConfigError(f"sites: dataset {data['name']!r} has no [N, C, H, W] images")
    if not isinstance(base.y, torch.Tensor):
        raise ConfigError(f"sites: dataset {data['name']!r} has no integer class labels")
    assert base.ids is not None
    site = assign_sites(base.y, len(specs), correlation, seed)
    x = base.x.clone()
    for i, s in enumerate(specs):
        if s["name"] == "none":
            continue
        idx = (site == i).nonzero().flatten()
        if len(idx):
            p = perturbations.create(s["name"], s.get("params") or {})
            rng = ExampleRNG.from_seed(seed_from("site", seed, i), base.ids[idx])
            x[idx] = p(x[idx], float(s.get("severity", 1)), rng)
    names = [site_name(s) for s in specs]
    meta = {**base.meta, "site": [names[i] for i in site.tolist()]}
    y, classes = (site, names) if target == "site" else (base.y, base.classes)
    return Dataset(
        x=x,
        y=y,
        name=f"{base.name}-sites{len(specs)}-c{correlation:g}"
        + ("-site" if target == "site" else ""),
        ids=base.ids,
        meta=meta,
        domain=base.domain,
        classes=classes,
        fields=dict(base.fields),
    )
