"""Training (issue 17 foundation): trainers on real data, cache, resume after a kill, bad input, CLI.

Real data: scikit-learn digits (8x8), an untrained ``small-cnn`` base, a few epochs each. The claims
checked are the seeds' qualitative ones at small scale: PGD-AT and TRADES raise PGD robust
accuracy over standard training at the same epochs; TRADES' beta trades clean for robust accuracy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import robustlab
from robustlab.attacks.pgd import PGD
from robustlab.cli import app
from robustlab.core.errors import CapabilityError, ConfigError, DomainError, RobustlabError
from robustlab.core.registry import REGISTRIES, datasets, models, trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel
from robustlab.training.checkpoint import TrainingFolder
from robustlab.training.loop import LoopConfig, TrainingError, evaluate, overfitting

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = {"name": "small-cnn", "params": {"side": 8}}
DATA = {"name": "digits", "params": {"split": "train"}}
EPS = 0.1


def spec(trainer: str, epochs: int = 5, **params: Any) -> dict[str, Any]:
    return {
        "base": BASE,
        "data": DATA,
        "trainer": {"name": trainer, "params": {"lr": 3e-3, **params}},
        "epochs": epochs,
        "holdout": 128,
        "eval_eps": EPS,
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One model cache for the module: models trained by one test are cache hits in the next."""
    root = tmp_path_factory.mktemp("train-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTLAB_CACHE", str(root))
        yield root


def accuracies(clf: Any) -> tuple[float, float]:
    """Clean and PGD-10 (eps 0.1) accuracy on the 360 digits test images."""
    te = datasets.create("digits", {"split": "test"})
    with torch.no_grad():
        clean = float((clf.logits(te.x).argmax(1) == te.y).float().mean())
    res = PGD(steps=10)(
        clf, te.x, te.y, ThreatModel("inf", EPS), rng=ExampleRNG.from_seed(0, te.ids)
    )
    return clean, 1.0 - float(res.success.float().mean())


def test_trainers_registry_and_spec_errors(cache: Path) -> None:
    assert REGISTRIES["trainers"] is trainers
    assert {"standard", "pgd-at", "trades", "fgsm-rs"} <= set(trainers.names())
    with pytest.raises(ConfigError, match="did you mean 'pgd-at'"):
        robustlab.train(spec("pgd_at"))
    with pytest.raises(ConfigError, match="eps"):  # checked before any training or data loading
        robustlab.train(spec("pgd-at", eps=float("nan")))
    with pytest.raises(ConfigError, match="base"):
        robustlab.train({**spec("standard"), "base": "small-cnn"})
    assert not list(cache.glob("models/trained-*"))


def test_pgd_at_raises_robust_accuracy_over_standard(cache: Path) -> None:
    std = robustlab.train(spec("standard"))
    at = robustlab.train(spec("pgd-at", eps=EPS))
    (c_std, r_std), (c_at, r_at) = accuracies(std), accuracies(at)
    assert c_std > 0.9 and c_at > 0.9  # both learnt the task
    assert r_at >= r_std + 0.1, (r_std, r_at)  # measured: 0.517 -> 0.783
    hist = at.provenance["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5]
    for key in ("train_loss", "train_acc", "clean_loss", "clean_acc", "fgsm_acc", "pgd_loss"):
        assert all(isinstance(h[key], float) for h in hist), key
    assert hist[-1]["pgd_acc"] > hist[0]["pgd_acc"]  # held-out robust accuracy improved
    assert at.provenance["train_examples"] + at.provenance["holdout_examples"] == 1437
    # the held-out evaluation does not depend on its chunk size (per-example random streams)
    te = datasets.create("digits", {"split": "test"})
    cfg = LoopConfig(epochs=5, seed=0, eval_eps=EPS)
    whole, chunked = evaluate(at, te, cfg, 7), evaluate(at, te, cfg, 7, chunk=50)
    for k in ("clean_acc", "fgsm_acc", "pgd_acc"):
        assert whole[k] == chunked[k], k
    assert whole["pgd_loss"] == pytest.approx(chunked["pgd_loss"], rel=1e-5)


def test_trades_beta_trades_clean_for_robust(cache: Path) -> None:
    std = robustlab.train(spec("standard"))
    low = robustlab.train(spec("trades", eps=EPS, beta=0.3))
    high = robustlab.train(spec("trades", eps=EPS, beta=6.0))
    (_, r_std), (c_low, r_low), (c_high, r_high) = map(accuracies, (std, low, high))
    assert r_high >= r_std + 0.1, (r_std, r_high)  # measured: 0.517 -> 0.808
    assert c_high < c_low and r_high > r_low, (
        c_low,
        r_low,
        c_high,
        r_high,
    )  # 0.972/0.697 vs 0.956/0.808


def test_adversarial_fine_tuning_reaches_pgd_at_in_fewer_epochs(cache: Path) -> None:
    """S36 (Jeddi et al., 2020): PGD-AT fine-tuning of a clean pretrained model with the
    slow-start, fast-decay learning rate reaches PGD-AT-from-scratch robustness in a fraction of its
    cost; the schedule is what makes it work (the same fine-tuning at a constant rate does not)."""
    pretrained = {"name": "trained", "params": spec("standard")}  # 5 clean epochs

    def aft(schedule: str) -> Any:
        return robustlab.train(
            {**spec("pgd-at", epochs=2, eps=EPS, lr=1e-2), "base": pretrained, "schedule": schedule}
        )

    scratch, tuned = robustlab.train(spec("pgd-at", eps=EPS)), aft("slow-start-fast-decay")
    (_, r_scratch), (c_aft, r_aft), (_, r_const) = map(
        accuracies, (scratch, tuned, aft("constant"))
    )
    assert c_aft > 0.9 and r_aft >= r_scratch - 0.02, (r_scratch, r_aft)  # measured 0.783, 0.792
    assert r_aft >= r_const + 0.05, (r_const, r_aft)  # measured: constant 1e-2 -> 0.689

    def passes(clf: Any) -> int:  # forward/backward passes per training example, from provenance
        prov = clf.provenance
        steps = prov["key"]["trainer"]["params"].get("steps", 0)
        return prov["epochs_run"] * (steps + 1)

    cost = passes(robustlab.train(spec("standard"))) + passes(tuned)
    assert cost / passes(scratch) < 0.55  # 5 + 2 x 8 = 21 vs 5 x 8 = 40


def test_noise_training_raises_accuracy_under_noise(cache: Path) -> None:
    """The existing noise/consistency objective as a trainer: on any base and data."""
    te = datasets.create("digits", {"split": "test"})
    noise = 0.5 * torch.randn(te.x.shape, generator=torch.Generator().manual_seed(0))

    def noisy_acc(clf: Any) -> float:
        with torch.no_grad():
            return float((clf.logits(te.x + noise).argmax(1) == te.y).float().mean())

    std = robustlab.train(spec("standard"))
    noisy = robustlab.train(spec("noise", sigma=0.5))
    assert noisy_acc(noisy) >= noisy_acc(std) + 0.05  # measured: 0.556 -> 0.644
    dual = robustlab.train(spec("noise", epochs=1, sigma=0.25, consistency=1.0, view="dual"))
    assert dual.provenance["history"][0]["train_loss"] > 0


def test_ibp_training_certifies(cache: Path) -> None:
    from robustlab.certify.ibp import IntervalBounds

    te = datasets.create("digits", {"split": "test"})

    def certified(clf: Any) -> float:
        c = IntervalBounds(eps=EPS).certify(clf, te.x, te.y, rng=ExampleRNG.from_seed(0, te.ids))
        return float(((c.pred == te.y) & (c.radius >= EPS)).float().mean())

    mlp = {"name": "mlp", "params": {"side": 8, "hidden": 64}}  # IBP: a base without BatchNorm
    std = robustlab.train({**spec("standard", epochs=8), "base": mlp})
    ibp = robustlab.train({**spec("ibp", epochs=8, eps=EPS), "base": mlp})
    assert certified(std) <= 0.05 and certified(ibp) >= 0.15  # measured: 0.000 -> 0.253
    epochs: list[int] = []
    with pytest.raises(ConfigError, match="BatchNorm2d in training mode"):  # at the first batch
        robustlab.train(spec("ibp", epochs=3, warmup=2), on_epoch=lambda r: epochs.append(1))
    assert epochs == []


def test_second_call_is_a_cache_hit(cache: Path) -> None:
    s = spec("standard", epochs=2)
    first = robustlab.train(s)
    folder = Path(first.provenance["cache"])
    assert (folder / "model.pt").is_file() and not (folder / "checkpoint.pt").exists()
    calls: list[int] = []
    again = robustlab.train(s, on_epoch=lambda row: calls.append(row["epoch"]))
    assert calls == []  # nothing trained
    assert again.provenance == first.provenance
    for a, b in zip(
        first.module.state_dict().values(), again.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    other = robustlab.train(spec("standard", epochs=2, batch_size=64))  # another spec: trains
    assert other.provenance["cache"] != str(folder)


def test_concurrent_requests_train_once(cache: Path) -> None:
    """Two trainers of one spec at once (threads here; processes alike): the second waits on the
    folder's lock and loads the first one's result instead of training it again."""
    import threading

    s = spec("standard", epochs=2, batch_size=32)
    epochs: list[int] = []
    results: list[Any] = []

    def go() -> None:
        results.append(robustlab.train(s, on_epoch=lambda row: epochs.append(row["epoch"])))

    models.names(), datasets.names(), trainers.names()  # lazy discovery is not thread-safe
    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(epochs) == [1, 2]  # trained once
    assert results[0].provenance == results[1].provenance


KILLED = """
import os, signal, sys, torch
torch.set_num_threads(1)
import robustlab

def hook(row):
    if row["epoch"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)

robustlab.train(__SPEC__, progress=False, on_epoch=hook)
"""


def test_resume_after_kill_equals_uninterrupted(cache: Path, tmp_path: Path) -> None:
    s = spec("pgd-at", epochs=3, eps=EPS, steps=2)  # random starts: resume must restore them
    env = {**os.environ, "ROBUSTLAB_CACHE": str(tmp_path / "killed")}
    code = KILLED.replace("__SPEC__", repr(s))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    (ckpt,) = (tmp_path / "killed").glob("models/trained-*/checkpoint.pt")
    assert len(torch.load(ckpt, weights_only=True)["history"]) == 1
    assert not (ckpt.parent / "model.pt").exists()

    os.environ["ROBUSTLAB_CACHE"] = str(tmp_path / "killed")  # restored by the cache fixture
    epochs: list[int] = []
    resumed = robustlab.train(s, on_epoch=lambda row: epochs.append(row["epoch"]))
    assert epochs == [2, 3]  # epoch 1 came from the checkpoint
    os.environ["ROBUSTLAB_CACHE"] = str(tmp_path / "whole")
    whole = robustlab.train(s)
    os.environ["ROBUSTLAB_CACHE"] = str(cache)
    assert resumed.provenance["history"] == whole.provenance["history"]
    for a, b in zip(
        resumed.module.state_dict().values(), whole.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_nan_loss_stops_naming_epoch_and_parameter(cache: Path) -> None:
    s = spec("standard", epochs=3, lr=1e30)
    finished = set(cache.glob("models/trained-*/model.pt"))
    with pytest.raises(TrainingError, match=r"epoch 1: .*parameter '[\w.]+' is no longer finite"):
        robustlab.train(s)
    assert issubclass(TrainingError, RobustlabError)  # the CLI prints it as one line, exit 2
    assert set(cache.glob("models/trained-*/model.pt")) == finished  # nothing cached as a model


def test_black_box_base_and_wrong_shapes_are_refused(cache: Path) -> None:
    with pytest.raises(CapabilityError, match="'pgd-at' needs input gradients.*'digits-logreg'"):
        robustlab.train({**spec("pgd-at", eps=EPS), "base": {"name": "digits-logreg"}})
    with pytest.raises(CapabilityError, match="'standard' needs trainable torch weights"):
        robustlab.train({**spec("standard"), "base": {"name": "digits-logreg"}})
    with pytest.raises(DomainError, match=r"shape \(1, 8, 8\), model expects \(1, 28, 28\)"):
        robustlab.train({**spec("standard"), "base": {"name": "small-cnn"}})


def test_overfitting_rule() -> None:
    rows = [
        {"epoch": 1, "pgd_acc": 0.30, "fgsm_acc": 0.35},
        {"epoch": 2, "pgd_acc": 0.40, "fgsm_acc": 0.45},
    ]
    assert not overfitting(rows[:1], rows[1])  # improving
    assert overfitting(rows, {"epoch": 3, "pgd_acc": 0.05, "fgsm_acc": 0.80})  # collapse, FGSM up
    assert not overfitting(rows, {"epoch": 3, "pgd_acc": 0.05, "fgsm_acc": 0.10})  # both fell
    assert not overfitting(rows, {"epoch": 3, "pgd_acc": 0.25, "fgsm_acc": 0.80})  # drop < 0.2
    assert not overfitting([], {"epoch": 1, "pgd_acc": 0.0, "fgsm_acc": 1.0})
    assert not overfitting(rows, {"epoch": 3})  # no robust evaluation (standard, no eval_eps)


def test_cli_train_writes_loadable_files(cache: Path, tmp_path: Path) -> None:
    s = spec("standard", epochs=2)
    text = json.dumps({**s, "evaluate": {"limit": 200, "steps": 5}})  # JSON is YAML
    (tmp_path / "spec.yaml").write_text(text)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app, ["train", str(tmp_path / "spec.yaml"), "--out", str(out), "--no-progress"],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "before" in r.output and "after" in r.output and "digits-test (200 examples)" in r.output
    trained = robustlab.train(s)  # the same spec: a cache hit
    x = datasets.create("digits", {"split": "test"}).x[:32]
    want = trained.logits(x)
    scripted = torch.jit.load(str(out / "model.torchscript.pt"))
    assert torch.allclose(scripted(x), want, atol=1e-5)
    as_file = models.create("file", {"path": str(out / "model.torchscript.pt"), "num_classes": 10})
    assert torch.allclose(as_file.logits(x), want, atol=1e-5)
    net = models.create("small-cnn", {"side": 8}).module
    net.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    assert torch.allclose(net.eval()(x), want, atol=1e-5)
    prov = json.loads((out / "provenance.json").read_text())
    assert [h["epoch"] for h in prov["history"]] == [1, 2]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent("base: {name: small-cnn}\ntrainer: {name: pgd-at, params: {eps: .nan}}\n")
    )
    r = CliRunner().invoke(app, ["train", str(bad), "--out", str(out)])
    assert r.exit_code == 2 and "eps" in r.output


def test_checkpoint_written_for_another_spec_is_ignored(tmp_path: Path) -> None:
    folder = TrainingFolder({"v": 1, "a": 1}, root=tmp_path)
    folder.save_checkpoint({"key": {"v": 1, "a": 2}, "history": [{"epoch": 1}]})
    with pytest.warns(UserWarning, match="another spec"):
        assert folder.load_checkpoint() is None
    folder.checkpoint.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable"):
        assert folder.load_checkpoint() is None
    assert not folder.checkpoint.exists()


def test_trained_models_run_in_a_suite(cache: Path, tmp_path: Path) -> None:
    """A trained model is a model spec like any other: validated, run, stored; PGD-AT stays more
    robust than standard training under the runner's own PGD probe."""
    from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite, run_suite
    from robustlab.runner.validation import validate_suite
    from robustlab.store import Store

    def model(label: str, trainer: str, **params: Any) -> ModelSpec:
        return ModelSpec(name="trained", label=label, params=spec(trainer, **params))

    suite = Suite(
        name="trained",
        models=[model("standard", "standard"), model("pgd-at", "pgd-at", eps=EPS)],
        data=ComponentSpec(name="digits", params={"split": "test"}),
        probes=[ProbeSpec(kind="attack", name="pgd", params={"steps": 10}, levels=[EPS])],
    )
    validate_suite(suite)
    bad = suite.model_dump(mode="json")
    bad["models"][1]["params"]["trainer"]["params"]["steps"] = 0
    with pytest.raises(ConfigError, match=r"trainer 'pgd-at' parameter 'steps' must be greater"):
        validate_suite(Suite.model_validate(bad))
    st = Store(tmp_path / "store.db")
    rid = run_suite(suite, st, progress=False)
    rec = st.records(rid)
    robust = rec[rec["probe"] != "clean"].groupby("model")["correct"].mean()
    assert robust["pgd-at"] >= robust["standard"] + 0.1, robust
    # the provenance is stored with the run and shown in the report
    training = st.run_info(rid)["environment"]["training"]
    assert set(training) == {"standard#0", "pgd-at#0"}
    assert training["pgd-at#0"]["spec"]["trainer"]["name"] == "pgd-at"
    assert len(training["pgd-at#0"]["history"]) == training["pgd-at#0"]["epochs_run"] >= 1
    from robustlab.report.build import build_report
    from robustlab.report.html import render

    section = build_report(st, rid)["extensions"]["training"]
    rows = {r["model"]: r for r in section["data"]["rows"]}
    assert (
        rows["pgd-at#0"]["trainer"].startswith("pgd-at(")
        and f"eps={EPS}" in rows["pgd-at#0"]["trainer"]
    )
    last = training["pgd-at#0"]["history"][-1]
    assert rows["pgd-at#0"]["pgd_acc"] == last["pgd_acc"] and rows["standard#0"][
        "trainer"
    ].startswith("standard")
    html = render(build_report(st, rid))
    assert "Training provenance" in html and "held-out PGD" in html
    from typer.testing import CliRunner

    from robustlab.cli import app

    shown = CliRunner().invoke(app, ["show", rid, "--store", str(tmp_path / "store.db")])
    assert shown.exit_code == 0, shown.output
    epochs = training["pgd-at#0"]["epochs_run"]
    assert (
        f"trained pgd-at#0: pgd-at on digits, {epochs} epochs (held-out clean_acc" in shown.stdout
    )
    assert "'history'" not in shown.stdout  # the per-epoch rows are in the report, not printed
    st.engine.dispose()


@pytest.mark.slow
def test_fast_at_catastrophic_overfitting_is_detected_and_restored(cache: Path) -> None:
    """FGSM-RS with a 2 eps step at eps 0.2 on Fashion-MNIST overfits catastrophically (Wong et
    al., 2020): measured held-out PGD accuracy 0.293 (epoch 2) -> 0.090 (epoch 6) while FGSM
    accuracy rose 0.461 -> 0.672. ``on_co: restore`` stops there with the epoch-2 weights."""
    from robustlab.core.rng import seed_from
    from robustlab.training.api import _split
    from robustlab.training.loop import CatastrophicOverfittingWarning, LoopConfig, evaluate

    s = {
        "base": {"name": "small-cnn", "params": {"side": 28, "width": 8}},
        "data": {"name": "fashion-mnist", "params": {"split": "train", "limit": 3000}},
        "trainer": {"name": "fgsm-rs", "params": {"eps": 0.2, "step_size": 2.0, "lr": 3e-3}},
        "epochs": 12,
        "on_co": "restore",
    }
    with pytest.warns(CatastrophicOverfittingWarning, match="catastrophic overfitting at epoch"):
        clf = robustlab.train(s)
    hist = clf.provenance["history"]
    last = hist[-1]
    assert last["co"] and last["stopped"] and len(hist) < 12
    best = max(hist, key=lambda h: h["pgd_acc"])
    assert last["restored_epoch"] == best["epoch"]
    assert best["pgd_acc"] - last["pgd_acc"] >= 0.2 and last["fgsm_acc"] >= best["fgsm_acc"]
    # the model returned is the restored one: its held-out numbers are the best epoch's
    _, hold = _split(datasets.create("fashion-mnist", s["data"]["params"]), 256, 0)
    cfg = LoopConfig(epochs=12, seed=0, eval_eps=0.2)
    again = evaluate(clf, hold, cfg, seed_from("holdout", 0, best["epoch"]))
    assert again["pgd_acc"] == best["pgd_acc"] and again["clean_acc"] == best["clean_acc"]


def test_trainer_hooks_freeze_state_and_resume(tmp_path: Path) -> None:
    """The optional trainer hooks: ``trainable`` trains only the selected parameters (the others
    stay bit-identical and get ``requires_grad`` back), ``setup`` sees the training set,
    ``Position.index`` holds each batch's training-set positions, and ``state_dict`` is saved in the
    checkpoint and restored on resume (a resumed fit ends with the same trainer state)."""
    from robustlab.training.loop import fit
    from robustlab.training.trainers import Standard

    class LastLayer(Standard):
        def setup(self, clf: Any, train: Any) -> None:
            self.seen = torch.zeros(len(train), dtype=torch.long)

        def trainable(self, clf: Any) -> Any:
            return list(clf.module.parameters())[-2:]

        def step(self, clf: Any, x: Any, y: Any, rng: Any, at: Any) -> Any:
            self.seen[at.index] += 1
            return super().step(clf, x, y, rng, at)

        def state_dict(self) -> dict[str, Any]:
            return {"seen": self.seen.clone()}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.seen = state["seen"].clone()

    data = datasets.create("digits", {"split": "train"}).take(torch.arange(300))
    clf = models.create("small-cnn", {"side": 8})
    before = [p.detach().clone() for p in clf.module.parameters()]
    t = LastLayer(lr=3e-3, batch_size=64)
    cfg = LoopConfig(epochs=2, seed=0)
    history = fit(clf, data, None, t, cfg, TrainingFolder({"v": 0, "hooks": 1}, root=tmp_path))
    assert len(history) == 2 and torch.equal(t.seen, torch.full((300,), 2))
    after = list(clf.module.parameters())
    assert all(p.requires_grad for p in after)
    assert all(torch.equal(a, b) for a, b in zip(before[:-2], after[:-2], strict=True))
    assert not torch.equal(before[-1], after[-1])
    # resume: a fresh trainer object continues from the epoch-2 checkpoint to epoch 3
    t2 = LastLayer(lr=3e-3, batch_size=64)
    cfg3 = LoopConfig(epochs=3, seed=0)
    folder = TrainingFolder({"v": 0, "hooks": 1}, root=tmp_path)
    assert len(fit(clf, data, None, t2, cfg3, folder)) == 3
    assert torch.equal(t2.seen, torch.full((300,), 3))
