"""``robustlab export mlflow``: a real run exported to a local MLflow file store through the CLI
and read back with MLflow's own client: every metric equals the report's number (and the records'
accuracy computed directly), params and report artifacts are there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.export.mlflow import metrics_of, sanitize
from robustlab.report import build_report
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytest.importorskip("mlflow")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SUITE = """
name: mlflow-test
models:
  - {name: digits-mlp}
  - {name: digits-cnn}
data: {name: digits, params: {split: test}}
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [2]}
  - {kind: attack, name: fgsm, levels: [0.1]}
metrics: [accuracy, attack_success_rate]
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    store = Store(root / "runs.db")
    run_id = run_suite(Suite.from_yaml(SUITE), store, progress=False)
    uri = (root / "mlruns").as_uri()
    res = CliRunner().invoke(
        app,
        [
            "export",
            "mlflow",
            run_id,
            "--store",
            str(root / "runs.db"),
            "--tracking-uri",
            uri,
            "--experiment",
            "robustness",
        ],  # fmt: skip
    )
    assert res.exit_code == 0, res.output
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("robustness")
    (mrun,) = client.search_runs([exp.experiment_id])
    return {"store": store, "id": run_id, "client": client, "run": mrun, "root": root,
            "uri": uri, "output": res.output}  # fmt: skip


def test_metrics_equal_report(exported: dict[str, Any]) -> None:
    got = exported["run"].data.metrics
    content = build_report(exported["store"], exported["id"])
    assert got == pytest.approx(metrics_of(content))
    assert f"{len(got)} metrics" in " ".join(exported["output"].split())
    # every (model, kind, probe, level) accuracy: the report's number and the records' own mean
    df = exported["store"].records(exported["id"])
    direct = df.assign(c=df["correct"].fillna(0.0)).groupby(["model", "kind", "probe", "level"])
    rows = content["sections"]["metrics"]["rows"]
    assert len(rows) == 6  # 2 models x (clean, noise@2, fgsm@0.1)
    for r in rows:
        key = sanitize(f"accuracy/{r['model']}/{r['kind']}/{r['probe']}/{r['level']:g}")
        assert got[key] == pytest.approx(r["accuracy"])
        ref = direct["c"].mean()[(r["model"], r["kind"], r["probe"], r["level"])]
        assert got[key] == pytest.approx(ref)
        assert got[key.replace("accuracy/", "n/", 1)] == r["n"]
        assert got[key.replace("accuracy/", "accuracy_lo/", 1)] <= got[key]
    for r in content["summary"]["models"]:
        assert got[f"summary/{r['model']}/clean_accuracy"] == pytest.approx(r["clean_accuracy"])
        assert got[f"summary/{r['model']}/adv_worst_accuracy"] == pytest.approx(
            r["adv_worst_accuracy"]
        )
    key = sanitize("attack_success_rate/digits-cnn/attack/fgsm/0.1")
    atk = df[(df["model"] == "digits-cnn") & (df["kind"] == "attack")]
    assert got[key] > 0 and 0 < got[key] <= 1 and len(atk)


def test_params_tags_and_artifacts(exported: dict[str, Any], tmp_path: Path) -> None:
    run, client = exported["run"], exported["client"]
    info = exported["store"].run_info(exported["id"])
    p = run.data.params
    assert p["robustlab.run_id"] == exported["id"] and p["suite"] == "mlflow-test"
    assert p["seed"] == str(info["seed"]) and p["models"] == "digits-mlp,digits-cnn"
    for model, fp in info["fingerprints"].items():
        assert p[sanitize(f"fingerprint/{model}")] == str(fp)
    assert (
        run.info.run_name == exported["id"] and run.data.tags["robustlab.run_id"] == exported["id"]
    )
    assert run.info.status == "FINISHED"
    names = sorted(a.path for a in client.list_artifacts(run.info.run_id, "report"))
    assert names == [f"report/{exported['id']}.html", f"report/{exported['id']}.json"]
    local = client.download_artifacts(
        run.info.run_id, f"report/{exported['id']}.json", str(tmp_path)
    )
    content = json.loads(Path(local).read_text())
    assert content["run"]["id"] == exported["id"] and content["summary"]["leaderboard"]


def test_sanitize() -> None:
    assert sanitize("accuracy/m (v2)/pgd L∞/8/255") == "accuracy/m _v2_/pgd L_/8/255"
    assert sanitize("/a..b") == "a_b" and len(sanitize("x" * 400)) == 250


def test_bad_input(exported: dict[str, Any]) -> None:
    db = str(exported["root"] / "runs.db")
    res = CliRunner().invoke(app, ["export", "mlflow", "no-such-run", "--store", db,
                                   "--tracking-uri", exported["uri"]])  # fmt: skip
    assert res.exit_code == 2 and "error" in res.output
    res = CliRunner().invoke(app, ["export", "mlflow", exported["id"], "--store", db,
                                   "--tracking-uri", "sqlite:///" + str(exported["root"] / "m.db")])  # fmt: skip
    assert (
        res.exit_code == 2 and "error" in res.output and len(res.output.strip().splitlines()) == 1
    )
