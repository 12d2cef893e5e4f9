"""Plans: a suite becomes serializable, idempotent work units with content-hash keys."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property

from pydantic import BaseModel, ConfigDict

from robustlab.runner.suite import ComponentSpec, ModelSpec, ProbeSpec, Suite

UNIT_FORMAT = 1  # bump when the meaning of a unit's records changes


class WorkUnit(BaseModel):
    """(model replicate, probe, level, data shard): the smallest piece of a run.

    ``level`` is None for certifier units, which certify once and emit a record per radius.
    """

    model_config = ConfigDict(frozen=True)

    seed: int
    task: ComponentSpec
    model: ModelSpec
    replicate: int
    data: ComponentSpec
    probe: ProbeSpec | None  # None: the clean evaluation
    level: float | None
    shard: int
    shard_size: int

    @cached_property
    def key(self) -> str:
        payload = json.dumps([UNIT_FORMAT, self.model_dump(mode="json")], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    @property
    def probe_label(self) -> str:
        return self.probe.display if self.probe else "clean"

    @property
    def kind(self) -> str:
        return self.probe.kind if self.probe else "clean"

    def describe(self) -> str:
        lvl = "" if self.level is None or self.probe is None else f"@{self.level:g}"
        return f"{self.model.display}#{self.replicate} {self.probe_label}{lvl} shard {self.shard}"


def plan(suite: Suite, shards: dict[str, int]) -> list[WorkUnit]:
    """All units of ``suite``; ``shards`` maps a data spec's JSON to its number of shards."""
    units: list[WorkUnit] = []
    base = {"seed": suite.seed, "task": suite.task, "shard_size": suite.shard_size}
    for model in suite.models:
        for rep in model.replicates:
            probes: list[tuple[ProbeSpec | None, list[float | None]]] = [(None, [0.0])]
            for p in suite.probes:
                if p.models is not None and model.display not in p.models:
                    continue
                if p.kind == "certifier":
                    probes.append((p, [None]))
                elif p.kind == "evalset":
                    probes.append((p, [0.0]))
                elif p.kind == "diagnosis":
                    probes.append((p, p.run_levels))
                else:
                    probes.append((p, list(p.levels)))
            for probe, levels in probes:
                data = probe.data if probe is not None and probe.data is not None else suite.data
                for level in levels:
                    # a diagnosis reads its whole dataset in one unit (fit and score sets)
                    n = (
                        1
                        if probe is not None and probe.kind == "diagnosis"
                        else shards[data_key(data)]
                    )
                    for shard in range(n):
                        units.append(
                            WorkUnit(**base, model=model, replicate=rep, data=data, probe=probe,
                                     level=level, shard=shard)
                        )  # fmt: skip
    return units


def data_key(spec: ComponentSpec) -> str:
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True)
