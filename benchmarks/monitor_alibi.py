"""Drift detectors of robustlab.monitor against alibi-detect 0.13.0 (KSDrift, MMDDrift) on real data.

alibi-detect pins numpy<2 and numba<0.60, so it cannot live in robustlab's venv: run in two steps,

    .venv/bin/python benchmarks/monitor_alibi.py export /tmp/drift.npz        # robustlab's numbers
    BENCH_VENV/bin/python benchmarks/monitor_alibi.py check /tmp/drift.npz    # alibi-detect's

where BENCH_VENV (python 3.11) has ``"numpy<2" "numba<0.60" "scipy<1.14" "scikit-learn<1.6"
"transformers<5" catalogue dill toml pydantic tqdm typing_extensions`` and
``alibi-detect==0.13.0 --no-deps``, plus torch for MMDDrift's pytorch backend (measured: a
``.pth`` file appending robustlab's venv site-packages, so its torch 2.13 CPU wheel is found
after the bench venv's own numpy 1.26). Data: digits test split (reference, 360) against 300-example batches
(clean digits, Gaussian noise severities 1/3/5, Fashion-MNIST at 8x8). alibi's permutation
p-value counts the permutations above the observed MMD^2 (k / P), robustlab's is (1 + k) / (1 + P).
Results: benchmarks/results_monitor_alibi.txt.
"""

from __future__ import annotations

import sys

import numpy as np

BATCHES = {
    "clean": None, "noise-1": 1, "noise-3": 3, "noise-5": 5, "fashion": "fashion",
}  # fmt: skip


def export(path: str) -> None:
    import torch

    torch.set_num_threads(1)
    from scipy import stats

    from robustlab import monitor

    ref = monitor.load_inputs({"dataset": "digits", "params": {"split": "test"}})
    out: dict[str, np.ndarray] = {"ref": ref}
    for name, level in BATCHES.items():
        if level == "fashion":
            spec = {
                "dataset": "fashion-mnist",
                "params": {"split": "test", "size": 8, "limit": 300},
            }
        else:
            spec = {"dataset": "digits", "params": {"split": "train"}, "sample": 300}
            if level:
                spec["perturbation"] = {"name": "gaussian_noise", "level": level}
        x = monitor.load_inputs(spec)
        ks = monitor.ks_test(ref, x)
        mmd = monitor.mmd_test(ref, x, n_permutations=1000, seed=0)
        r2, x2 = ref.reshape(len(ref), -1), x.reshape(len(x), -1)
        p_asymp = stats.ks_2samp(r2, x2, axis=0, method="asymp").pvalue
        out |= {f"{name}/x": x, f"{name}/ks_d": ks["d"], f"{name}/ks_p": ks["p"], f"{name}/ks_p_asymp": p_asymp,
                f"{name}/mmd2": np.array(mmd["statistic"]), f"{name}/mmd_p": np.array(mmd["p_value"]),
                f"{name}/sigma": np.array(mmd["sigma"])}  # fmt: skip
    np.savez(path, **out)


def check(path: str) -> None:
    import torch

    torch.set_num_threads(1)
    import alibi_detect
    from alibi_detect.cd import KSDrift, MMDDrift

    z = np.load(path)
    ref = z["ref"].reshape(len(z["ref"]), -1).astype(np.float32)
    print(
        f"alibi-detect {alibi_detect.__version__}, numpy {np.__version__}, torch {torch.__version__}"
    )
    print(f"reference: digits test {ref.shape}; batches of 300; MMD with robustlab's median sigma")
    print(
        "KS: max |robustlab - alibi| over features of D and p (robustlab: scipy's default method,"
    )
    print(
        "exact at these sizes; alibi: asymptotic); dp_asymp: scipy's asymptotic p on the same data"
    )
    print(
        "batch     max|dD|   max|dp|  max|dp_asymp|   MMD^2 robustlab / alibi    p robustlab / alibi"
    )
    for name in BATCHES:
        x = z[f"{name}/x"].reshape(len(z[f"{name}/x"]), -1).astype(np.float32)
        ks = KSDrift(ref, p_val=0.05, correction="bonferroni").predict(
            x, return_p_val=True, return_distance=True
        )
        dd = np.abs(ks["data"]["distance"] - z[f"{name}/ks_d"]).max()
        dp = np.abs(ks["data"]["p_val"] - z[f"{name}/ks_p"]).max()
        dpa = np.abs(ks["data"]["p_val"] - z[f"{name}/ks_p_asymp"]).max()
        sigma = np.array([float(z[f"{name}/sigma"])], dtype=np.float32)
        mmd = MMDDrift(ref, backend="pytorch", p_val=0.05, sigma=sigma, n_permutations=1000,
                       configure_kernel_from_x_ref=False).predict(x)  # fmt: skip
        print(f"{name:9s} {dd:.1e}   {dp:.1e}  {dpa:.1e}         "
              f"{float(z[f'{name}/mmd2']):.6f} / {mmd['data']['distance']:.6f}      "
              f"{float(z[f'{name}/mmd_p']):.3f} / {mmd['data']['p_val']:.3f}")  # fmt: skip


if __name__ == "__main__":
    {"export": export, "check": check}[sys.argv[1]](sys.argv[2])
