"""S28: memorising vs generalising neurons by their Fourier inverse participation ratio, and pruning.

Doshi et al., "To grok or not to grok: Disentangling generalization and memorization on corrupted
algorithmic datasets" (ICLR 2024). A network that *generalises* on modular addition uses
periodic neurons: each neuron's input weights are (close to) a single Fourier mode of ``Z_p``.
Neurons that *memorise* corrupted labels have weights spread over many frequencies. The paper
tells them apart by the inverse participation ratio (IPR) of the Fourier-transformed weights and
shows that pruning the low-IPR neurons lowers the accuracy on the corrupted training labels and
raises it on the clean ones (Sec. 3-4).

Exact formula used here. For a neuron with input weights ``u`` (its row of ``U``, the ``a``
half of the first layer, length ``p``) let ``û_k = sum_j u_j exp(-2 pi i j k / p)`` and fold the
conjugate frequencies of a real vector together: ``P_0 = |û_0|^2``, ``P_k = |û_k|^2 +
|û_{p-k}|^2`` for ``0 < k < p/2`` and ``P_{p/2} = |û_{p/2}|^2`` for even ``p``, ``F = floor(p/2)
+ 1`` frequencies. With ``nu_k = P_k / sum_k P_k`` (the normalised power),

    IPR_2(u) = sum_k nu_k^2 = (||A||_4 / ||A||_2)^4,   A_k = sqrt(P_k)

(the paper's ``IPR_r`` with ``r = 2``). A single Fourier mode (any phase) has IPR 1; power spread
evenly over the ``F`` frequencies has IPR ``1/F``. A neuron's IPR is the mean of the IPRs of its
``a`` and ``b`` weight halves (``U`` and ``V``). A zero vector has IPR 0.

The registered ``memorization`` diagnosis computes the IPR of every neuron of the first hidden
layer, prunes the fraction ``level`` of them with the **lowest** IPR (``order: low-ipr``, the
paper's memorising neurons; ``high-ipr`` and ``random`` are controls) and scores the suite's data
(role ``test``) and the corrupted training split ``train`` (role ``train``) before and after.

Records (one per example; ``extra``): ``correct`` / ``pred``: the pruned model against the
example's *given* label (for a corrupted training example: whether it still fits the corrupted
label, i.e. memorisation); ``correct_before``: the same for the unpruned model; ``true_correct``
and ``true_correct_before``: against the true result (``fields["clean_y"]``); ``pruned``: how many
neurons were pruned; ``ipr_cut``: the largest IPR among the pruned neurons (NaN for none);
``ipr_mean``: the mean IPR of all neurons. The corrupted flag is the data's ``meta["corrupted"]``.

Example (suite YAML)::

    probes:
      - kind: diagnosis
        name: memorization
        params: {train: {name: modular-arithmetic, params: {p: 47, noise: 0.1, split: train}}}
        levels: [0, 0.1, 0.2, 0.3, 0.4]
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.levels import Levels
from robustlab.core.registry import diagnoses
from robustlab.diagnose.base import DiagnosisEnv, Scored
from robustlab.runner.suite import ComponentSpec


def fourier_power(u: torch.Tensor) -> torch.Tensor:
    """The folded Fourier power ``P_k`` (``[..., floor(p/2) + 1]``) of real vectors ``u``
    (``[..., p]``) over ``Z_p`` (see the module docstring)."""
    p = u.shape[-1]
    power = torch.fft.fft(u.double(), dim=-1).abs() ** 2
    half = p // 2
    folded = power[..., : half + 1].clone()
    k = torch.arange(1, (p + 1) // 2)  # 0 < k < p/2: add the conjugate frequency p - k
    folded[..., k] += power[..., p - k]
    return folded


def ipr(u: torch.Tensor, r: int = 2) -> torch.Tensor:
    """``IPR_r`` of the folded Fourier power of each vector of ``u`` (``[..., p]`` -> ``[...]``):
    ``sum_k nu_k^r`` with ``nu = P / sum P``; 1 for one Fourier mode, ``1/F`` for flat power, 0
    for a zero vector."""
    power = fourier_power(u)
    total = power.sum(-1, keepdim=True)
    nu = torch.where(total > 0, power / total.clamp_min(1e-300), torch.zeros_like(power))
    return (nu**r).sum(-1).float()


def neuron_ipr(weight: torch.Tensor, p: int) -> torch.Tensor:
    """Per-neuron IPR of a first-layer weight ``[hidden, 2p]`` (inputs ``[one_hot(a),
    one_hot(b)]``): the mean of the IPRs of the ``a`` and ``b`` halves."""
    if weight.dim() != 2 or weight.shape[1] != 2 * p:
        raise ConfigError(
            f"neuron_ipr: weight of shape {tuple(weight.shape)} is not [hidden, 2*{p}]"
        )
    w = weight.detach().cpu()
    return (ipr(w[:, :p]) + ipr(w[:, p:])) / 2


def pruning_order(scores: torch.Tensor, order: str, seed: int) -> torch.Tensor:
    """Neuron indices in the order they are pruned: ascending IPR (``low-ipr``), descending
    (``high-ipr``) or a seeded permutation (``random``); ties by index."""
    if order == "random":
        return torch.randperm(len(scores), generator=torch.Generator().manual_seed(seed))
    return torch.sort(scores, descending=order == "high-ipr", stable=True).indices


@diagnoses.register("memorization", levels=Levels(0, 1, what="fraction of neurons pruned"))
class Memorization:
    """S28: IPR of hidden neurons in the Fourier basis; prune the fraction ``level`` of them
    (lowest IPR = memorising, per Doshi et al. 2024) and score train (corrupted) and test data."""

    def __init__(
        self,
        train: dict[str, Any] | None = None,
        order: Literal["low-ipr", "high-ipr", "random"] = "low-ipr",
    ) -> None:
        self.train = train
        self.order = order

    def datasets(self) -> dict[str, ComponentSpec]:
        if self.train is None:
            return {}
        if not isinstance(self.train, dict) or "name" not in self.train:
            raise ConfigError(f"memorization: train must be a dataset spec {{name, params}}, "
                              f"got {self.train!r}")  # fmt: skip
        return {"train": ComponentSpec(**self.train)}

    def check_model(self, model: Any) -> None:
        _first_layer(model)

    def run(self, model: Any, data: Any, level: float, env: DiagnosisEnv) -> list[Scored]:
        from robustlab.models.modular import prune

        if not 0 <= level <= 1:
            raise ConfigError(f"memorization: level is the fraction of neurons pruned, in [0, 1]; "
                              f"got {level}")  # fmt: skip
        weight, p = _first_layer(model)
        scores = neuron_ipr(weight, p)
        k = int(round(level * len(scores)))
        chosen = pruning_order(scores, self.order, env.seed)[:k]
        pruned = prune(model, chosen, "net.act1") if k else model
        cut = float(scores[chosen].max()) if k else float("nan")
        sets = [("test", data)] + ([("train", env.data(self.train))] if self.train else [])
        out = []
        for role, d in sets:
            if d.x.shape[1] != 2 * p:
                raise ConfigError(f"memorization: {role} data has {d.x.shape[1]} inputs, the "
                                  f"model reads {2 * p}")  # fmt: skip
            y = torch.as_tensor(d.y)
            clean = d.fields.get("clean_y", y)
            with torch.no_grad():
                before = model.logits(d.x).argmax(1).cpu()
                after = pruned.logits(d.x).argmax(1).cpu()
            n = len(d)
            extra = {
                "correct_before": (before == y).tolist(),
                "true_correct": (after == clean).tolist(),
                "true_correct_before": (before == clean).tolist(),
                "pruned": [k] * n,
                "ipr_cut": [cut] * n,
                "ipr_mean": [float(scores.mean())] * n,
            }
            out.append(Scored(d, after, (after == y).float(), extra, role=role))
        return out


def _first_layer(model: Any) -> tuple[torch.Tensor, int]:
    """The first-layer weight ``[hidden, 2p]`` of a ``modular-mlp`` and ``p``."""
    from robustlab.models.modular import ModularMLP

    m = getattr(model, "module", None)
    if not isinstance(m, ModularMLP):
        raise CapabilityError(
            f"memorization: needs a modular-mlp (one-hot pair inputs, hidden neurons whose "
            f"weights have a Fourier spectrum), got {type(m or model).__name__}"
        )
    return m.net.inp.weight, m.p
