"""A pytest plugin that records what a test run did, for the reliability report
(benchmarks/reliability.py): every test's outcome, and every kernel launch the tests made.

    python -m pytest -p tests.launch_log ...      # writes $CONVGRAPH_LAUNCH_LOG (JSON)

Launches are counted where convgraph enqueues them (``Executor.enqueue``, wrapped to count
after the real call returns: nothing is replaced or skipped), each with its kernel
specialisation: the family file, the selector and the defines the code generator chose
(``KernelSpec.identity()``), so the same kernel built into many programs counts once. Run under
Oclgrind, every one of these launches was checked by the simulator.

The CHILD script of tests/test_oclgrind.py uses ``LaunchCounter`` directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from pathlib import Path

KERNELS = Path(__file__).resolve().parent.parent / "kernels"
# a kernel's own block: '#if defined(NAME)' alone on its line ('#if defined(GATE) && ...' is an
# option inside a kernel, not one)
SELECTOR = re.compile(r"^#if defined\((\w+)\)(?:\s*\|\|\s*defined\((\w+)\))?[ \t]*$", re.M)


def kernel_templates() -> list[str]:
    """Every kernel of kernels/*.cl as 'family.cl SELECTOR' (peak.cl, the profiler's, aside)."""
    found = []
    for path in sorted(KERNELS.glob("*.cl")):
        if path.stem == "peak":
            continue
        for match in SELECTOR.finditer(path.read_text()):
            found += [f"{path.name} {name}" for name in match.groups() if name]
    return found


class LaunchCounter:
    """Counts the launches of every Executor from ``install()`` on; ``summary()`` as JSON."""

    def __init__(self):
        self.launches = 0
        self.specialisations: set[tuple] = set()
        self.templates: Counter = Counter()
        self.networks: set[str] = set()  # program sources (by the plan's kernel identities)

    def install(self) -> None:
        from convgraph.runtime.executor import Executor

        original = Executor.enqueue
        counter = self

        def enqueue(executor, batch, events=None, group="forward", scalars=None):
            original(executor, batch, events, group, scalars)
            counter.count(executor, group)

        enqueue.__doc__ = original.__doc__
        Executor.enqueue = enqueue

    def count(self, executor, group: str) -> None:
        plan = executor.plan
        launches = plan.launch_groups()[group]
        self.launches += len(launches)
        self.networks.add(hashlib.sha1(str(sorted(
            spec.identity() for spec in plan.kernels.values())).encode()).hexdigest())
        for launch in launches:
            spec = plan.kernels[launch.kernel]
            self.specialisations.add(spec.identity())
            self.templates[f"{spec.family}.cl {spec.selector}"] += 1

    def summary(self) -> dict:
        return summarise(self.launches, {repr(s) for s in self.specialisations}, self.networks,
                         self.templates)

    def mergeable(self) -> dict:
        """What ``merge`` needs to add this run to others (the sets, not only their sizes)."""
        return {"specialisation_ids": sorted(repr(s) for s in self.specialisations),
                "program_ids": sorted(self.networks)}


def summarise(launches: int, specialisations: set, programs: set, templates: Counter) -> dict:
    every = kernel_templates()
    return {"launches": launches, "specialisations": len(specialisations),
            "programs": len(programs),
            "templates_launched": len(set(every) & set(templates)),
            "templates": len(every),
            "templates_never_launched": sorted(set(every) - set(templates)),
            "launches_by_template": dict(templates.most_common())}


def merge(records: list[dict]) -> dict:
    """One record for runs made in parallel (the shards of the Oclgrind sweep): outcomes joined,
    launches and tests added up, specialisations and programs counted once over all runs."""
    outcomes = {k: v for record in records for k, v in record.get("outcomes", {}).items()}
    counts = Counter(outcomes.values())
    templates = sum((Counter(r.get("launches_by_template", {})) for r in records), Counter())
    return {"exit_status": max((r.get("exit_status", 1) for r in records), default=1),
            "seconds": max((r.get("seconds", 0) for r in records), default=0),
            "shards": len(records),
            "tests": {"passed": counts["passed"], "failed": counts["failed"],
                      "skipped": counts["skipped"]},
            "outcomes": outcomes,
            "durations": {k: v for r in records for k, v in r.get("durations", {}).items()},
            **summarise(sum(r.get("launches", 0) for r in records),
                        {s for r in records for s in r.get("specialisation_ids", [])},
                        {p for r in records for p in r.get("program_ids", [])}, templates)}


class LaunchLog:
    """The plugin: test outcomes (from pytest's own reports) and the launch counts."""

    def __init__(self, target: Path):
        self.target = target
        self.counter = LaunchCounter()
        self.counter.install()
        self.outcomes: dict[str, str] = {}
        self.durations: dict[str, float] = {}
        self.start = time.monotonic()

    def pytest_runtest_logreport(self, report):
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration
        if report.when == "call" or report.outcome != "passed":
            if self.outcomes.get(report.nodeid) in (None, "passed"):  # a teardown error counts
                self.outcomes[report.nodeid] = report.outcome

    def pytest_sessionfinish(self, session, exitstatus):
        counts = Counter(self.outcomes.values())
        record = {"exit_status": int(exitstatus), "seconds": round(time.monotonic() - self.start,
                                                                   1),
                  "tests": {"passed": counts["passed"], "failed": counts["failed"],
                            "skipped": counts["skipped"]},
                  "outcomes": self.outcomes,
                  "durations": {k: round(v, 3) for k, v in self.durations.items()},
                  **self.counter.summary(), **self.counter.mergeable()}
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.target.write_text(json.dumps(record, indent=1) + "\n")


def pytest_configure(config):
    target = os.environ.get("CONVGRAPH_LAUNCH_LOG")
    if target and not config.pluginmanager.has_plugin("convgraph-launch-log"):
        config.pluginmanager.register(LaunchLog(Path(target)), "convgraph-launch-log")
