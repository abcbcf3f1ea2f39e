"""`convgraph tune`: time each kernel site's settings on the device and keep the fastest.

For every tunable site of a network's training (or inference) plan, heaviest first, the tuner
re-plans the network with one candidate setting for that site, builds a small program holding
only that site's kernels, runs their launches on zero-filled buffers of the planned sizes and
takes the median of several timed runs. The search walks one knob at a time from the default
(coordinate descent, a second sweep if time allows), inside a time budget; sites the budget does
not reach keep their defaults. The winners go to the device's tuning file (codegen/tuning.py),
which every later compile on this device reads.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace

from convgraph.codegen.plan import Launch
from convgraph.codegen.profile import profile_for
from convgraph.codegen.tuning import Site, Tuning, save_tuning
from convgraph.errors import ConvgraphError, OutputError
from convgraph.runtime.program import SubPlan
from convgraph.runtime.target import Target, build


@dataclass
class SiteResult:
    site: Site
    mode: str  # "train" or "infer": training lays gradients out with halos, so sites differ
    default_ms: float
    best_ms: float
    best: dict
    tried: int
    flops: int

    @property
    def speedup(self) -> float:
        return self.default_ms / self.best_ms if self.best_ms else 1.0


@dataclass
class TuneReport:
    device: str
    path: str = ""
    results: list[SiteResult] = field(default_factory=list)
    skipped: list[Site] = field(default_factory=list)  # not reached within the budget
    seconds: float = 0.0
    unsaved: OutputError | None = None  # why the winners could not be saved (path is "")


class _ProbePlan(SubPlan):
    """The part of a plan one site needs (an ExecutablePlan): its kernels, its launches and the
    buffers they touch, each sized as in the whole plan, all of them, parameters and state
    included, allocated per batch and zero-filled (timing needs no values)."""

    def __init__(self, graph, plan, launches: list[Launch], batch: int):
        super().__init__(plan, {"probe": launches}, plan.fixed_sizes())
        self._sizes = {**super().buffer_sizes(batch), **super().fixed_sizes()}

    def buffer_sizes(self, batch: int) -> dict[str, int]:
        return self._sizes

    def fixed_sizes(self) -> dict[str, int]:
        return {}


def tune(graph, device=None, batch: int = 64, budget: float = 120.0,
         modes: tuple[str, ...] = ("train", "infer"), repeats: int = 5,
         progress=None) -> TuneReport:
    """Tune every kernel site of ``graph``'s training and/or inference plan on ``device`` (a
    selector or a Target) within ``budget`` seconds and save the winners; ``progress(done,
    total, text)`` follows the sites. (Training and inference sites differ: training lays
    gradients out with halos.) A table that cannot be written leaves ``report.path`` empty
    and the OutputError in ``report.unsaved`` (``convgraph tune`` shows the results, then
    exits 7 with it)."""
    start = time.perf_counter()
    tuner = _Tuner(graph, device, batch, repeats)
    sites = tuner.sites(modes)
    report = TuneReport(tuner.info.label)
    found: dict[str, dict] = {}
    try:
        for done, site in enumerate(sites):
            if time.perf_counter() >= start + budget:
                report.skipped.extend(sites[done:])
                break
            result = tuner.tune_site(site, start + budget)
            report.results.append(result)
            found[site.key] = {"knobs": result.best, "ms": round(result.best_ms, 4),
                               "default_ms": round(result.default_ms, 4), "node": site.node,
                               "kernel": site.selector, "batch": batch}
            if progress:
                progress(done + 1, len(sites), f"{site.node} {site.selector}")
    finally:  # what was measured before a Ctrl-C is kept
        if found:
            try:
                report.path = str(_save(tuner.info, found))
            except OutputError as exc:  # the results stand; the caller says they are unsaved
                report.unsaved = exc
    report.seconds = time.perf_counter() - start
    return report


class _Tuner:
    """Times one network's kernel sites on one device."""

    def __init__(self, graph, device, batch: int, repeats: int):
        self.graph, self.batch, self.repeats = graph, batch, repeats
        opened = Target.open(device)
        # every candidate is timed against the untuned defaults, whatever is tuned already
        self.base = replace(profile_for(opened.info, tuned=False), tuning=Tuning())
        self.target = opened.with_profile(self.base)
        self.info, self.queue = self.target.info, self.target.queue
        self.mode_of: dict[str, str] = {}
        self.flops_of: dict[str, int] = {}

    def plan_with(self, tuning: Tuning, mode: str):
        from convgraph.codegen.plan import plan_forward
        from convgraph.codegen.training import plan_training

        profile = replace(self.base, tuning=tuning)
        if mode == "train":
            train = self.graph.graph["train"]
            return plan_training(self.graph, profile, train["optimizer"], train)
        return plan_forward(self.graph, profile)

    def sites(self, modes) -> list[Site]:
        """Every site of the plans of ``modes``, heaviest first."""
        every: dict[str, Site] = {}
        for mode in modes:
            plan = self.plan_with(Tuning(), mode)
            for key, site in plan.sites.items():
                if key not in every:
                    every[key], self.mode_of[key] = site, mode
                    self.flops_of[key] = _site_flops(plan, key)
        return sorted(every.values(), key=lambda s: -self.flops_of[s.key])

    def warm_executor(self, probe: _ProbePlan, title: str):
        """``probe`` built, its buffers allocated and its launches run once (the first launch
        compiles on some drivers)."""
        executor = build(probe, self.target, title).executor()
        executor.allocate(self.batch)
        executor.enqueue(self.batch, group="probe")
        self.queue.finish()
        return executor

    def probe(self, site: Site, knobs: dict):
        """(plan, the site's launches, a warm executor of them) with ``knobs``."""
        plan = self.plan_with(Tuning().with_choice(site.key, knobs), self.mode_of[site.key])
        launches = [launch for group in plan.launch_groups().values() for launch in group
                    if launch.site == site.key]
        probe = _ProbePlan(self.graph, plan, launches, self.batch)
        return plan, launches, self.warm_executor(probe, f"tuning {site.node}")

    def runner(self, site: Site, knobs: dict):
        """A function timing the site's launches with ``knobs`` (built and warmed up once)."""
        _, _, executor = self.probe(site, knobs)

        def run() -> float:
            samples = []
            for _ in range(self.repeats):
                events: list = []
                executor.enqueue(self.batch, events, group="probe")
                self.queue.finish()
                samples.append(sum(e.profile.end - e.profile.start for e in events) * 1e-6)
            return statistics.median(samples)

        return run

    def tune_site(self, site: Site, deadline: float) -> SiteResult:
        """Coordinate descent from the default: each knob in turn, the others fixed, twice at
        most; then the winner must beat the default again, the two timed alternately (a shared
        machine's load comes and goes between candidates)."""
        runs: dict[tuple, object] = {}
        times: dict[tuple, float] = {}

        def timed(knobs: dict) -> float:
            key = tuple(sorted(knobs.items()))
            if key not in times:
                try:
                    runs[key] = self.runner(site, knobs)
                    times[key] = runs[key]()
                except ConvgraphError:
                    times[key] = float("inf")  # a setting this device cannot run
            return times[key]

        best = site.default
        best_ms = default_ms = timed(best)
        for _ in range(2):
            improved = False
            for knob in site.default:
                for value in sorted({k[knob] for k in site.space}, key=str):
                    candidate = {**best, knob: value}
                    if candidate not in site.space or time.perf_counter() >= deadline:
                        continue
                    ms = timed(candidate)
                    if ms < best_ms * 0.98:  # noise: a setting must win clearly to move
                        best, best_ms, improved = candidate, ms, True
            if not improved:
                break
        pair = [runs.get(tuple(sorted(k.items()))) for k in (site.default, best)]
        if best != site.default and all(pair):
            rounds = [[run() for run in pair] for _ in range(3)]
            default_ms = statistics.median(r[0] for r in rounds)
            best_ms = statistics.median(r[1] for r in rounds)
            if best_ms >= default_ms:
                best, best_ms = site.default, default_ms
        return SiteResult(site, self.mode_of[site.key], default_ms, best_ms, best, len(times),
                          self.flops_of[site.key] * self.batch)


def _save(info, found: dict):
    try:
        return save_tuning(info, found)
    except OSError as exc:
        raise OutputError(
            f"could not write the tuning file for {info.label}: {exc}.",
            hint="make the cache directory writable, or point CONVGRAPH_CACHE elsewhere.",
        ) from None


def _site_flops(plan, key: str) -> int:
    return sum(launch.flops for group in plan.launch_groups().values() for launch in group
               if launch.site == key)
