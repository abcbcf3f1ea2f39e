"""`convgraph tune`: time each kernel site's settings on the device and keep the fastest.

For every tunable site of a network's training (or inference) plan, heaviest first, the tuner
re-plans the network with one candidate setting for that site, builds a small program holding
only that site's kernels, runs their launches on zero-filled buffers of the planned sizes and
takes the median of several timed runs. The search has two stages, as CLBlast's tuner does: a
fixed set first (the profile's default, the device's shipped vendor default, and the settings
nearest to those that won most often at this kernel's other sites, in this run and in the
device's tuning table), then random samples of the rest of the space (``samples`` at most, in an
order drawn from ``seed``, so a run can be repeated). The budget is split over the sites by
their FLOPs, heaviest first, and what a site leaves unused goes to the sites after it; sites the
budget does not reach keep their defaults. ``search="descent"`` is the earlier search (one knob
at a time from the default, a second sweep if time allows), kept to compare against. Either
way a winner is re-timed against the default, alternately, before it is accepted. The winners
go to the device's tuning file (codegen/tuning.py), which every later compile on this device
reads.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from convgraph.codegen.plan import Launch
from convgraph.codegen.profile import profile_for
from convgraph.codegen.tuning import Site, Tuning, load_tuning, nearest, save_tuning
from convgraph.errors import ConvgraphError, OutputError, UsageError
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


SEARCHES = ("two-stage", "descent")
SAMPLES = 12  # random samples per site after the fixed set (at most; the budget may stop it)
FREQUENT = 3  # settings that won most often, in the fixed set
MIN_CANDIDATES = 2  # timed at every site reached, whatever its share (the default and one)


def tune(graph, device=None, batch: int = 64, budget: float = 120.0,
         modes: tuple[str, ...] = ("train", "infer"), repeats: int = 5,
         progress=None, search: str = "two-stage", samples: int = SAMPLES,
         seed: int = 0) -> TuneReport:
    """Tune every kernel site of ``graph``'s training and/or inference plan on ``device`` (a
    selector or a Target) within ``budget`` seconds and save the winners; ``progress(done,
    total, text)`` follows the sites. (Training and inference sites differ: training lays
    gradients out with halos.) ``search`` is "two-stage" (a fixed set, then up to ``samples``
    random samples per site drawn from ``seed``) or "descent" (one knob at a time). A table
    that cannot be written leaves ``report.path`` empty and the OutputError in
    ``report.unsaved`` (``convgraph tune`` shows the results, then exits 7 with it)."""
    if search not in SEARCHES:
        raise UsageError(f"tune's search must be {' or '.join(SEARCHES)}, not {search!r}.",
                         hint="two-stage (a fixed set, then random samples) or descent.")
    start = time.perf_counter()
    tuner = _Tuner(graph, device, batch, repeats)
    sites = tuner.sites(modes)
    report = TuneReport(tuner.info.label)
    found: dict[str, dict] = {}
    winners = _winners(load_tuning(tuner.info))
    deadline = start + budget
    try:
        for done, site in enumerate(sites):
            now = time.perf_counter()
            if now >= deadline:
                report.skipped.extend(sites[done:])
                break
            share = _share(deadline - now, [tuner.flops_of[s.key] for s in sites[done:]],
                           tuner.probe_seconds())
            if search == "descent":  # the earlier search: every site may use what is left
                result = tuner.descend(site, deadline)
            else:
                fixed = tuner.fixed_set(site, winners.get(site.selector, Counter()))
                result = tuner.two_stage(site, fixed, min(now + share, deadline), deadline,
                                         samples, seed)
            winners.setdefault(site.selector, Counter())[_frozen(result.best)] += 1
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


def two_stage_order(site: Site, fixed: list[dict], samples: int, seed: int) -> list[dict]:
    """The settings a two-stage search times at ``site``, in order: ``fixed``, then ``samples``
    of the rest of its space drawn at random from ``seed`` and the site (the same every run).

    >>> site = Site("k", "conv1", "CONV_FORWARD", tuple({"A": n} for n in range(9)))
    >>> order = two_stage_order(site, [{"A": 0}, {"A": 4}], 3, seed=0)
    >>> order[:2], len(order), order == two_stage_order(site, [{"A": 0}, {"A": 4}], 3, 0)
    ([{'A': 0}, {'A': 4}], 5, True)
    """
    chosen = {_frozen(knobs) for knobs in fixed}
    rest = [knobs for knobs in site.space if _frozen(knobs) not in chosen]
    rng = random.Random(f"{seed}:{site.key}")
    return list(fixed) + rng.sample(rest, min(samples, len(rest)))


def _share(left: float, flops: list[int], probe: float) -> float:
    """The seconds of ``left`` for the first of the sites of ``flops`` (heaviest first): shares
    by FLOPs among the heaviest sites that each get MIN_CANDIDATES probes of ``probe`` seconds
    (the lighter ones would get too few to find anything: their time goes to the heavier)."""
    weights = [max(f, 1) for f in flops]
    while len(weights) > 1 and left * weights[-1] / sum(weights) < MIN_CANDIDATES * probe:
        weights.pop()
    return left * weights[0] / sum(weights)


def _frozen(knobs: dict) -> tuple:
    return tuple(sorted(knobs.items()))


def _winners(tuning: Tuning) -> dict[str, Counter]:
    """How often each setting won, by kernel, in a tuning table (this device's or the one it
    borrows): the fixed set's third part, with this run's winners added as they come."""
    counts: dict[str, Counter] = {}
    for key, entry in tuning.entries.items():
        counts.setdefault(key.split(":")[0], Counter())[_frozen(entry["knobs"])] += 1
    return counts


class _Tuner:
    """Times one network's kernel sites on one device."""

    def __init__(self, graph, device, batch: int, repeats: int):
        self.graph, self.batch, self.repeats = graph, batch, repeats
        opened = Target.open(device)
        # every candidate is timed against the untuned defaults, whatever is tuned already
        self.base = profile_for(opened.info, tuned=False)
        self.shipped = self.base.tuning
        self.target = opened.with_profile(self.base)
        self.info, self.queue = self.target.info, self.target.queue
        self.probes, self.probe_time = 0, 0.0  # candidates timed, and their seconds
        self.mode_of: dict[str, str] = {}
        self.flops_of: dict[str, int] = {}

    def plan_with(self, tuning: Tuning, mode: str):
        from convgraph.codegen.plan import plan_forward
        from convgraph.codegen.training import plan_training

        profile = replace(self.base, tuning=replace(tuning, shipped=self.shipped.shipped))
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

    def probe_seconds(self) -> float:
        """The mean wall-clock seconds of a candidate so far (build and timing; 0 before the
        first)."""
        return self.probe_time / self.probes if self.probes else 0.0

    def timer(self, site: Site):
        """(timed, runs): ``timed(knobs)`` builds and times a setting once (inf where the
        device cannot run it) and remembers it; ``runs`` maps settings to their timers."""
        runs: dict[tuple, object] = {}
        times: dict[tuple, float] = {}

        def timed(knobs: dict) -> float:
            key = _frozen(knobs)
            if key not in times:
                started = time.perf_counter()
                try:
                    runs[key] = self.runner(site, knobs)
                    times[key] = runs[key]()
                except ConvgraphError:
                    times[key] = float("inf")  # a setting this device cannot run
                self.probes += 1
                self.probe_time += time.perf_counter() - started
            return times[key]

        return timed, runs, times

    def untuned(self, site: Site) -> dict:
        """What the site runs untuned: the shipped vendor default, else the profile's."""
        return self.shipped.shipped_choice(site.space)

    def fixed_set(self, site: Site, won: Counter) -> list[dict]:
        """The first stage: the shipped vendor default (what runs untuned), the profile's
        default, then the settings of this site nearest to the FREQUENT that won most often at
        this kernel."""
        fixed = [self.untuned(site), site.default]
        fixed += [nearest(site.space, dict(knobs)) for knobs, _ in won.most_common(FREQUENT)]
        return [dict(knobs) for knobs in dict.fromkeys(_frozen(k) for k in fixed)]

    def two_stage(self, site: Site, fixed: list[dict], share_end: float, deadline: float,
                  samples: int, seed: int) -> SiteResult:
        """The fixed set, then up to ``samples`` random settings of the rest of the space, while
        the site's share lasts (MIN_CANDIDATES are timed whatever the share, within the
        whole budget)."""
        timed, runs, times = self.timer(site)
        candidates = two_stage_order(site, fixed, samples, seed)
        best, best_ms = fixed[0], timed(fixed[0])
        for candidate in candidates[1:]:
            now = time.perf_counter()
            if now >= deadline or (now >= share_end and len(times) >= MIN_CANDIDATES):
                break
            ms = timed(candidate)
            if ms < best_ms * 0.98:  # noise: a setting must win clearly to move
                best, best_ms = candidate, ms
        return self.confirmed(site, best, best_ms, times[_frozen(fixed[0])], runs,
                              len(times))

    def descend(self, site: Site, deadline: float) -> SiteResult:
        """Coordinate descent from the default: each knob in turn, the others fixed, twice at
        most (the search before the two-stage one)."""
        timed, runs, times = self.timer(site)
        best = self.untuned(site)
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
        return self.confirmed(site, best, best_ms, default_ms, runs, len(times))

    def confirmed(self, site: Site, best: dict, best_ms: float, default_ms: float, runs: dict,
                  tried: int) -> SiteResult:
        """The winner must beat the untuned setting again, the two timed alternately (a shared
        machine's load comes and goes between candidates)."""
        untuned = self.untuned(site)
        pair = [runs.get(_frozen(k)) for k in (untuned, best)]
        if best != untuned and all(pair):
            rounds = [[run() for run in pair] for _ in range(3)]
            default_ms = statistics.median(r[0] for r in rounds)
            best_ms = statistics.median(r[1] for r in rounds)
            if best_ms >= default_ms:
                best, best_ms = untuned, default_ms
        return SiteResult(site, self.mode_of[site.key], default_ms, best_ms, best, tried,
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
