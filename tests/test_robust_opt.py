"""Two-stage robust optimization (S24): exact CCG and Neur2RO on the robust knapsack family.

References: the closed-form second stage against HiGHS's LP (scipy.optimize.linprog); the dual
adversarial MILP and CCG against brute force (every first stage x every vertex of the budget
set); the network's MILP encodings against evaluating the torch network on every candidate.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.types import Domain
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.optim.knapsack import (
    InfeasibleError,
    Instance,
    brute_force,
    ccg,
    generate,
    recourse,  # fmt: skip
    recourse_lp,
    vertices,
    worst_case,
)
from robustlab.optim.neur2ro import (
    ValueNetwork,
    _mlp,
    affine_input,
    folded,
    learned_master,
    learned_worst_case,  # fmt: skip
    network_input,
    neur2ro,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _random_net(n: int, gamma: int, seed: int = 0) -> ValueNetwork:
    torch.manual_seed(seed)
    clf = TorchClassifier(_mlp(n, (8,)).eval(), 1, domain=Domain(0.0, 2.0, (4 * n + 1,)))
    return ValueNetwork(clf, n, gamma, float("nan"))


def test_closed_form_second_stage_equals_highs_lp() -> None:
    for seed in range(4):
        inst = generate(8, 3, seed)
        r = np.random.default_rng(seed)
        x = (r.random((10, 8)) < 0.7).astype(float)
        xi = vertices(8, 3)[r.integers(0, len(vertices(8, 3)), 10)]
        got = recourse(inst, torch.as_tensor(x), torch.as_tensor(xi)).numpy()
        ref = [recourse_lp(inst, a, b) for a, b in zip(x, xi, strict=True)]
        assert got == pytest.approx(ref, abs=1e-7)
        assert (got > 0).any()  # some scenarios overload the knapsack


def test_adversarial_milp_equals_enumeration_of_budget_vertices() -> None:
    inst = generate(7, 2, seed=3)
    v = torch.as_tensor(vertices(7, 2))
    assert len(v) == 1 + 7 + 21
    for x in ([1, 1, 1, 1, 0, 1, 0], [1] * 7, [0, 1, 0, 1, 1, 0, 1]):
        xt = torch.tensor(x, dtype=torch.float64)
        ref = recourse(inst, xt[None], v).max()
        value, xi = worst_case(inst, np.array(x, float))
        assert value == pytest.approx(float(ref), abs=1e-6)
        assert xi.sum() <= 2
        assert float(recourse(inst, xt[None], torch.as_tensor(xi)[None])[0]) == pytest.approx(value)


@pytest.mark.parametrize(("n", "gamma", "seed", "min_items"), [(6, 1, 0, 0), (6, 2, 1, 0),
                                                                (7, 3, 2, 3)])  # fmt: skip
def test_ccg_optimum_equals_brute_force(n: int, gamma: int, seed: int, min_items: int) -> None:
    inst = generate(n, gamma, seed, min_items)
    exact, brute = ccg(inst), brute_force(inst)
    assert exact.objective == pytest.approx(brute.objective, abs=1e-6)
    # the CCG decision is feasible and its exact robust value is the optimum
    assert inst.weight @ exact.x <= inst.capacity + 1e-9 and exact.x.sum() >= min_items
    worst = recourse(inst, torch.as_tensor(exact.x)[None], torch.as_tensor(vertices(n, gamma)))
    assert -inst.profit @ exact.x + float(worst.max()) == pytest.approx(exact.objective, abs=1e-6)
    assert exact.iterations >= 1


def test_infeasible_and_malformed_instances_raise_clear_errors() -> None:
    inst = generate(6, 2, seed=0)
    tight = Instance(inst.profit, inst.weight, inst.dev, inst.penalty, inst.capacity, 2, 6)
    with pytest.raises(InfeasibleError, match="no 6 items fit the capacity"):
        ccg(tight)
    with pytest.raises(InfeasibleError, match="infeasible"):
        neur2ro(_random_net(6, 2), tight)
    with pytest.raises(InfeasibleError):
        generate(6, 2, seed=0, min_items=6)
    bad = Instance(inst.profit, inst.weight, inst.dev, inst.penalty, -1.0, 2)
    with pytest.raises(ConfigError, match="capacity must be >= 0"):
        ccg(bad)
    nan = Instance(inst.profit, inst.weight * np.nan, inst.dev, inst.penalty, 1.0, 2)
    with pytest.raises(ConfigError, match="weight must be 6 finite"):
        brute_force(nan)
    with pytest.raises(ConfigError, match="trained for n=7"):
        neur2ro(_random_net(7, 2), inst)


def test_network_milps_are_exact_on_an_untrained_network() -> None:
    """The folded input maps reproduce the torch network; the learned adversarial and master
    MILPs find the maxima / minima that enumeration over the torch network finds."""
    n, gamma = 6, 2
    net, inst = _random_net(n, gamma, seed=1), generate(n, gamma, seed=5)
    chain = net.chain
    v = vertices(n, gamma)
    xs = np.array(list(itertools.product([0.0, 1.0], repeat=n)))
    x = np.array([1, 0, 1, 1, 0, 1], float)
    phi = net.predict(inst, torch.as_tensor(x).expand(len(v), -1), torch.as_tensor(v)).numpy()
    fold_x = folded(chain, *affine_input(inst, x=x))
    assert [float(fold_x.forward(xi)[0][0]) * 10 for xi in v] == pytest.approx(phi, abs=1e-4)
    value, xi = learned_worst_case(net, inst, x, chain)
    assert value == pytest.approx(phi.max(), abs=1e-4)
    assert xi.sum() <= gamma
    scen = [v[0], v[3], v[20]]
    feas = xs[(xs @ inst.weight <= inst.capacity)]
    theta = np.max([net.predict(inst, torch.as_tensor(feas), torch.as_tensor(s).expand(len(feas), -1))
                    .numpy() for s in scen], axis=0)  # fmt: skip
    obj = -feas @ inst.profit + theta
    x_star, th = learned_master(inst, scen, chain)
    assert -inst.profit @ x_star + th == pytest.approx(obj.min(), abs=1e-4)
    u = network_input(inst, torch.as_tensor(x)[None], torch.as_tensor(v[3])[None])
    m, c = affine_input(inst, xi=v[3])
    assert (m @ x + c) == pytest.approx(u[0].double().numpy(), abs=1e-6)


def test_task_refuses_other_models_and_data() -> None:
    from robustlab.core.registry import datasets, tasks

    task = tasks.create("robust-optimization", {})
    data = datasets.create("robust-knapsack", {"n_items": 6, "gamma": 2, "count": 2})
    with pytest.raises(CapabilityError, match="value network"):
        task.check(object(), data)
    with pytest.raises(ConfigError, match="trained for n=7"):
        task.check(_random_net(7, 2), data)
    with pytest.raises(ConfigError, match="gamma 3 exceeds"):
        datasets.create("robust-knapsack", {"n_items": 2, "gamma": 3})
    # an infeasible instance among feasible ones: its own error record, the other is solved
    inst = data.x[1]
    tight = Instance(inst.profit, inst.weight, inst.dev, inst.penalty, inst.capacity, 2, 6)
    ev = task.evaluate(_random_net(6, 2), [tight, inst], [None, None])
    assert (
        ev.error[0] is not None and ev.error[0].startswith("InfeasibleError") and ev.pred[0] is None
    )
    assert ev.error[1] is None and ev.extra["gap"][1] >= -1e-9
    assert ev.extra["objective_ccg"][1] == pytest.approx(brute_force(inst).objective, abs=1e-6)
    assert ev.pred[1] == pytest.approx(
        ev.extra["objective_ccg"][1] * (1 + ev.extra["gap"][1])
        if ev.extra["objective_ccg"][1] > 0
        else ev.extra["objective_ccg"][1] * (1 - ev.extra["gap"][1])
    )


@pytest.mark.slow
def test_neur2ro_small_gap_on_held_out_instances_through_the_runner(tmp_path) -> None:
    """A trained value network (n=6, Gamma=2) on 4 held-out instances: the exact evaluation of
    Neur2RO's decision is within 5 % of CCG's optimum on average and 15 % on each; an infeasible
    instance becomes an error record, the others are kept; the report section reads the records."""
    from robustlab.core.records import frame
    from robustlab.core.registry import datasets, models, report_sections
    from robustlab.runner import ComponentSpec, ModelSpec, Suite
    from robustlab.runner.runner import run_suite
    from robustlab.store import Store

    net = models.create("neur2ro-knapsack", {"n_items": 6, "gamma": 2})
    assert net.train_mae < 1.0  # objective units; Q is up to ~15 on this family
    suite = Suite(
        name="n2r", seed=0, task=ComponentSpec(name="robust-optimization"),
        models=[ModelSpec(name="neur2ro-knapsack", params={"n_items": 6, "gamma": 2})],
        data=ComponentSpec(name="robust-knapsack", params={"n_items": 6, "gamma": 2, "count": 4,
                                                           "seed": 7}),
    )  # fmt: skip
    store = Store(f"sqlite:///{tmp_path}/runs.db")
    run = run_suite(suite, store, progress=False)
    df = frame(store.records(run))
    gaps = df["x.gap"].astype(float).to_numpy()
    assert len(gaps) == 4 and (gaps >= -1e-6).all()
    assert gaps.mean() <= 0.05 and gaps.max() <= 0.15
    data = datasets.create("robust-knapsack", {"n_items": 6, "gamma": 2, "count": 4, "seed": 7})
    ref = [ccg(i).objective for i in data.x]
    assert df.sort_values("example_id")["x.objective_ccg"].astype(float).tolist() == pytest.approx(
        ref
    )
    sec = report_sections.create("robust_opt", {})
    built = sec.build(df, store.run_info(run))
    assert built["rows"][0]["n"] == 4
    assert built["rows"][0]["mean_gap"] == pytest.approx(gaps.mean())
    assert "Neur2RO" in sec.render(built)
    # an infeasible instance among feasible ones: one error record, nothing lost
    task = ComponentSpec(name="robust-optimization")
    from robustlab.core.registry import tasks

    tight = data.x[0]
    tight = Instance(tight.profit, tight.weight, tight.dev, tight.penalty, tight.capacity, 2, 6)
    ev = tasks.create(task.name, {}).evaluate(net, [tight, data.x[1]], [None, None])
    assert ev.error[0] is not None and "InfeasibleError" in ev.error[0] and ev.error[1] is None
    assert ev.pred[1] == pytest.approx(float(df.sort_values("example_id")["pred"].iloc[1]))
