"""PGD-AT epoch time: robustlab's training loop vs the bare loop (the physical limit) and peers.

The bare loop is PGD adversarial training written directly in torch: per batch, a uniform random
start in the Linf ball, K steps of ``x + alpha sign(grad)`` clamped to the ball and [0, 1], then one
training forward/backward and an Adam step -- K + 1 passes, nothing else. robustlab's epoch is
``robustlab.training.loop.fit`` with the ``pgd-at`` trainer (the attack core's PGD, per-example
random streams, input-domain checks, eval/train switches, the per-epoch checkpoint write), without
the held-out evaluation (``--holdout`` adds it, as a separate number). Same model, initial weights,
data, batch size, steps and memory layout; runs interleaved, medians reported. Target (issue 17):
<= 1.05x at batch 128.

Peers, on the same model, initial weights, data, batch, eps, step size, steps, random start and
Adam lr (``--peers``, default both):

- ``art``: ART 1.20's ``AdversarialTrainerMadryPGD`` around a ``PyTorchClassifier`` (numpy in and
  out of every call). Its PGD attack batch is set to the training batch (ART's default, 32, splits
  each training batch in four attack calls: ``--art-attack-batch 32`` to time that); every
  ``generate`` also predicts clean and adversarial inputs once more to log a success rate (ART's own
  cost, kept). Same step rule (sign step, uniform start, projection, [0, 1] clip).
- ``torchattacks``: ``torchattacks.PGD`` inside a plain training loop (its attack switches the
  module to eval mode and back, as robustlab and the bare loop do).

After the timed runs, each method's last trained model is evaluated with robustlab's PGD-10 on
1,000 Fashion-MNIST test images (a sanity line, not asserted: all should be close).

    .venv/bin/python benchmarks/train_pgd_at.py [--n 2048] [--steps 7] [--repeats 3] [--threads 1]
        [--device cpu|cuda] [--width 16] [--epochs 1] [--peers art,torchattacks]
    # full size: --n 8192 --repeats 5 --epochs 2

On a busy CPU use ``--threads 1`` and read the CPU-time ratio (process CPU seconds), which is far
less sensitive to other load than wall time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.attacks.pgd import PGD
from robustlab.core.registry import datasets, trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Domain, ThreatModel
from robustlab.models.nets import SmallCNN
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.training.checkpoint import TrainingFolder
from robustlab.training.loop import LoopConfig, fit


def bare_epoch(net, x, y, eps, steps, alpha, bs, seed) -> None:  # type: ignore[no-untyped-def]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator(device=x.device).manual_seed(seed)
    perm = torch.randperm(len(x), device=x.device, generator=g)
    for i in range(0, len(x), bs):
        idx = perm[i : i + bs]
        xb, yb = x[idx], y[idx]
        lo, hi = (xb - eps).clamp_min(0), (xb + eps).clamp_max(1)
        net.eval()
        cur = (xb + (2 * torch.rand(xb.shape, device=x.device, generator=g) - 1) * eps).clamp(0, 1)
        for _ in range(steps):
            cur.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(net(cur), yb, reduction="sum"), cur)
            cur = (cur.detach() + alpha * grad.sign()).clamp_(lo, hi)
        net.train()
        loss = F.cross_entropy(net(cur), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def art_epochs(net, x, y, eps, steps, alpha, bs, epochs, attack_bs, dev) -> None:  # type: ignore[no-untyped-def]
    """ART's Madry PGD-AT: the same settings through its estimator and trainer (numpy interface)."""
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")  # ART's per-epoch progress bars
    import numpy as np
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=net, loss=torch.nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
        input_shape=tuple(x.shape[1:]), nb_classes=10, clip_values=(0.0, 1.0),
        device_type="gpu" if dev.type == "cuda" else "cpu",
    )  # fmt: skip
    trainer = AdversarialTrainerMadryPGD(
        clf, nb_epochs=epochs, batch_size=bs, eps=eps, eps_step=alpha, max_iter=steps,
        num_random_init=1,
    )  # fmt: skip
    trainer.attack.set_params(batch_size=attack_bs)
    np.random.seed(0)
    trainer.fit(x.cpu().numpy(), y.cpu().numpy(), nb_epochs=epochs, batch_size=bs)


def torchattacks_epochs(net, x, y, eps, steps, alpha, bs, epochs, seed) -> None:  # type: ignore[no-untyped-def]
    """A plain PGD-AT script with torchattacks.PGD as the inner maximisation."""
    import torchattacks

    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    atk = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=True)
    g = torch.Generator(device=x.device).manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=x.device, generator=g)
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            net.train()
            x_adv = atk(x[idx], y[idx])  # eval mode inside, train mode restored
            loss = F.cross_entropy(net(x_adv), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def robust_accuracy(net, test, eps, dev) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Clean and robustlab PGD-10 accuracy of ``net`` on ``test`` (eval mode)."""
    clf = TorchClassifier(net.eval(), 10, Domain(0, 1, (1, 28, 28)), device=dev)
    x, y = test.x.to(dev), test.y.to(dev)
    with torch.no_grad():
        clean = float((clf.logits(x).argmax(1) == y).float().mean())
    res = PGD(steps=10)(clf, x, y, ThreatModel("inf", eps), rng=ExampleRNG.from_seed(0, test.ids))
    return clean, 1.0 - float(res.success.float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--peers", default="art,torchattacks")
    ap.add_argument("--art-attack-batch", type=int, default=0, help="0: the training batch")
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--holdout", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    data = datasets.create("fashion-mnist", {"split": "train", "limit": args.n + args.holdout})
    train, hold = data.take(range(args.n)), None
    if args.holdout:
        hold = data.take(range(args.n, args.n + args.holdout))
    trainer = trainers.create("pgd-at", {"eps": args.eps, "steps": args.steps, "lr": 1e-3,
                                         "batch_size": args.batch})  # fmt: skip
    alpha = max(2.5 / args.steps, 0.25) * args.eps  # PGD's default step, as the trainer uses

    torch.manual_seed(0)
    init = SmallCNN(1, 10, 28, args.width)
    probe = TorchClassifier(SmallCNN(1, 10, 28, args.width), 10, Domain(0, 1, (1, 28, 28)),
                            device=dev)  # fmt: skip
    layout = probe.memory_format
    x, y = train.x.to(dev), train.y.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    peers = [p for p in args.peers.split(",") if p]
    unknown = set(peers) - {"art", "torchattacks"}
    if unknown:
        ap.error(f"unknown peers {sorted(unknown)}: choose from art, torchattacks")
    nets: dict[str, torch.nn.Module] = {}  # each method's last trained model

    def fresh() -> torch.nn.Module:
        net = SmallCNN(1, 10, 28, args.width)
        net.load_state_dict(init.state_dict())
        return net.to(dev).to(memory_format=layout)

    def timed(name: str, body: Any) -> tuple[float, float]:
        net = fresh()
        sync()
        w, c = time.perf_counter(), time.process_time()
        body(net)
        sync()
        w, c = time.perf_counter() - w, time.process_time() - c
        nets[name] = net
        return w, c

    def bare(net: torch.nn.Module) -> None:
        xl = x.to(memory_format=layout)
        for e in range(args.epochs):
            bare_epoch(net, xl, y, args.eps, args.steps, alpha, args.batch, e)

    def lab(holdout: object) -> Any:
        def body(net: torch.nn.Module) -> None:
            clf = TorchClassifier(net, 10, Domain(0, 1, (1, 28, 28)), device=dev)
            cfg = LoopConfig(epochs=args.epochs, seed=0,
                             eval_eps=args.eps if holdout is not None else None)  # fmt: skip
            with tempfile.TemporaryDirectory() as tmp:
                folder = TrainingFolder({"bench": 1}, root=Path(tmp))
                fit(clf, train, holdout, trainer, cfg, folder)  # type: ignore[arg-type]

        return body

    def art(net: torch.nn.Module) -> None:
        art_epochs(net, x, y, args.eps, args.steps, alpha, args.batch, args.epochs,
                   args.art_attack_batch or args.batch, dev)  # fmt: skip

    def ta(net: torch.nn.Module) -> None:
        torchattacks_epochs(net, x, y, args.eps, args.steps, alpha, args.batch, args.epochs, 0)

    methods: dict[str, Any] = {"bare": bare, "robustlab": lab(None)}
    if hold is not None:
        methods["robustlab+holdout"] = lab(hold)
    if "art" in peers:
        methods["art"] = art
    if "torchattacks" in peers:
        methods["torchattacks"] = ta
    for name, body in methods.items():  # warm-up (allocator, oneDNN/cuDNN plans, imports)
        timed(name, body)
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, body in methods.items():
            rows[name].append(timed(name, body))
    print(f"PGD-AT: {args.epochs} epoch(s) of {args.n} Fashion-MNIST images, batch {args.batch}, "
          f"{args.steps} steps of {alpha:.4f} at eps {args.eps} (Linf, uniform start), Adam lr 1e-3, "
          f"SmallCNN width {args.width}, {dev}, layout {layout}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} interleaved")  # fmt: skip
    print("  all: sign steps, uniform random start, projection to the ball and [0, 1], eval-mode "
          "attack / train-mode update, Adam; differences: batch order (each its own RNG; ART numpy), "
          "loss reduction (mean vs sum: the sign step is the same)")  # fmt: skip
    if "art" in peers:
        print(f"  art: AdversarialTrainerMadryPGD, attack batch {args.art_attack_batch or args.batch}"
              " (ART default 32), numpy per call, +2 predicts per batch for its success log")  # fmt: skip
    med = {
        name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
        for name, rs in rows.items()
    }
    (bw, bc), (lw, lc) = med["bare"], med["robustlab"]
    print(f"  {'method':18s} {'wall s':>8s} {'/limit':>7s} {'/lab':>7s}  {'cpu s':>8s} {'/limit':>7s}"
          f" {'/lab':>7s}")  # fmt: skip
    for name, (w, c) in med.items():
        print(f"  {name:18s} {w:8.3f} {w / bw:6.3f}x {w / lw:6.3f}x  {c:8.3f} {c / bc:6.3f}x "
              f"{c / lc:6.3f}x")  # fmt: skip
    test = datasets.create("fashion-mnist", {"split": "test", "limit": args.test})
    print(f"  sanity (not asserted): clean / robustlab PGD-10 accuracy at eps {args.eps} on "
          f"{args.test} test images after the last run")  # fmt: skip
    for name, net in nets.items():
        clean, rob = robust_accuracy(net, test, args.eps, dev)
        print(f"  {name:18s} clean {clean:.3f}  PGD-10 {rob:.3f}")


if __name__ == "__main__":
    main()
