"""Registries discover their built-ins on first lookup; first lookups from several threads at once
(a thread pool evaluating models, Ray's threaded actors) must all see the complete registry."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import threading
from robustlab.core.registry import attacks, models, perturbations
wanted = [(models, "trained"), (attacks, "pgd"), (perturbations, "fog"), (models, "digits-cnn")]
errors, barrier = [], threading.Barrier(16)
def first_lookup(i):
    registry, name = wanted[i % len(wanted)]
    barrier.wait()
    try:
        registry.get(name)
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=first_lookup, args=(i,)) for i in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(errors), errors[:1])
"""


def test_first_lookups_from_many_threads_see_the_whole_registry() -> None:
    for _ in range(3):  # a fresh interpreter each time: discovery has not run yet
        r = subprocess.run(
            [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] == "0", r.stdout
