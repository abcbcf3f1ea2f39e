"""The planar first layer against the NHWC one, whole networks in one process, alternating.

    .venv/bin/python benchmarks/planar.py [--specs seed,vgg_cifar,resnet8] [--batch 64]
        [--rounds 7] [--repeats 10] [--train] [--tiles N]

For each spec two models are compiled on the same device: "planar" (the CPU profile as it is:
the first conv reads the input planar, kernels/conv_planar.cl) and "nhwc" (the same profile with
``conv_planar_input`` off: the direct kernel on the input packed to NHWC). Each round profiles
both (runtime/inspect.py's profile_inference: OpenCL event times per layer, and the median wall
time of ``model.forward``), in ABBA order across rounds; the table gives the median over rounds
and the spread (min-max) of the first layer's kernel time (its folded pool included), of all
kernels and of the wall time, with the planar / nhwc ratio paired round by round (median of the
per-round ratios), the first layer's GFLOP/s and % of the FMA peak measured beside it. With
``--train`` the same for one training step (runtime/inspect.py's profile_training): the first
layer's kernels, its backward kernels alone (weight gradient, split sums, bias gradient), all
kernels and the step's wall time.

``--tiles N`` instead times the first layer's site alone in the inference plan (the tuner's
probe: its launches on zero-filled buffers, OpenCL event times), the first N settings of each
body of the planar site's space and the NHWC direct site's default, alternating in each round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import convgraph  # noqa: E402
import convgraph.pipeline  # noqa: E402
import convgraph.runtime.target as target_module  # noqa: E402
import convgraph.runtime.tune as tune_module  # noqa: E402
from convgraph.graph import ordered  # noqa: E402
from convgraph.runtime.inspect import profile_inference, profile_training  # noqa: E402
from convgraph.runtime.tune import _Tuner  # noqa: E402
from convgraph.train.session import TrainingSession  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import probe_event_ms  # noqa: E402
from winograd import cpu_model  # noqa: E402

_profile_for = target_module.profile_for
ARMS = ("planar", "nhwc")


def compiled(spec: Path, batch: int, planar: bool, train: bool):
    """The model (or training session) of ``spec`` with the planar first layer on or off."""
    def make():
        model = convgraph.compile(str(spec), batch=batch)
        if train:
            return model, TrainingSession(model.graph, device=model.target, batch=batch)
        return model, None

    return planned(planar, make)


def planned(planar: bool, make):
    """``make()`` with the profile's planar first layer on or off (the compiler's and the
    tuner's profile)."""
    patched = lambda info, tuned=True: replace(_profile_for(info, tuned),  # noqa: E731
                                               conv_planar_input=planar)
    target_module.profile_for = tune_module.profile_for = patched
    try:
        return make()
    finally:
        target_module.profile_for = tune_module.profile_for = _profile_for


class SiteTimer:
    """The first layer's forward site alone with one setting: a warm probe executor."""

    def __init__(self, tuner, site, knobs: dict):
        self.knobs, self.tuner = knobs, tuner
        _, launches, self.executor = tuner.probe(site, knobs)
        self.flops = sum(launch.flops for launch in launches) * tuner.batch

    def run(self) -> float:
        return probe_event_ms(self.executor, self.tuner)


def tiles(name: str, batch: int, rounds: int, repeats: int, count: int) -> None:
    """The planar site's first ``count`` settings against the NHWC site's default."""
    graph = convgraph.pipeline.analyse(str(ROOT / "specs" / f"{name}.yaml"))
    node = next(n for n in ordered(graph) if graph.nodes[n].inputs)
    timers = {}
    for planar in (False, True):
        tuner = planned(planar, lambda: _Tuner(graph, None, batch, repeats))
        site = next(s for s in tuner.sites(("infer",)) if s.node == node)
        bodies = {}  # the planar site: its first ``count`` settings of each BODY
        for knobs in site.space:
            bodies.setdefault(knobs.get("BODY"), []).append(knobs)
        chosen = [k for group in bodies.values() for k in group[:count]] if planar else \
            site.space[:1]
        for knobs in chosen:
            label = ("planar " if planar else "nhwc ") + ",".join(
                f"{k}={v}" for k, v in knobs.items() if k not in ("LOCAL",))
            timers[label] = SiteTimer(tuner, site, knobs)  # (the tuner holds its profile)
    samples = {label: [] for label in timers}
    order = list(timers)
    for round_ in range(rounds):
        for label in order if round_ % 2 == 0 else order[::-1]:
            samples[label].append(timers[label].run())
    first = samples[order[0]]
    for label, times in samples.items():
        ms = statistics.median(times)
        paired = statistics.median(a / b for a, b in zip(first, times))
        rate = timers[label].flops / ms / 1e6
        print(f"| {name} | {node} | {label} | {spread(times)} | {rate:.0f} | "
              f"**{paired:.2f}x** |")


def first_layer(model) -> str:
    return next(n for n in ordered(model.graph) if model.graph.nodes[n].inputs)


def measure(model, session, batch: int, repeats: int) -> dict:
    """One round of one arm: the first layer's kernels (ms), all kernels, the wall time."""
    node = first_layer(model)
    if session is None:
        profile = profile_inference(model, batch, repeats)
    else:
        profile = profile_training(session, model, repeats)
    rows = [t for t in profile.timings if t.node == node and t.phase != "update"]
    kernels = sum(t.milliseconds for t in profile.timings)
    first = sum(t.milliseconds for t in rows)
    flops = sum(t.gflops * t.milliseconds for t in rows) * 1e-3  # GFLOP of those rows
    backward = sum(t.milliseconds for t in rows if t.phase == "backward")
    return {"first": first, "first backward": backward, "kernels": kernels,
            "wall": profile.wall_ms,
            "gflops": flops / (first * 1e-3) if first else 0.0, "peak": profile.peak_flops}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--specs", default="seed,vgg_cifar,resnet8")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--tiles", type=int, default=0)
    args = parser.parse_args()
    if args.tiles:
        print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}; batch "
              f"{args.batch}; the first layer's forward site alone; {args.rounds} rounds")
        print("| spec | layer | setting | ms | GFLOP/s | speed-up over nhwc (paired) |")
        print("|---|---|---|---|---|---|")
        for name in args.specs.split(","):
            tiles(name, args.batch, args.rounds, args.repeats, args.tiles)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        return
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}; batch {args.batch}; "
          f"{'training step' if args.train else 'inference'}; {args.rounds} rounds")
    print("| spec | first layer | what | planar ms | nhwc ms | planar/nhwc (paired) |"
          " first layer GFLOP/s planar / nhwc (% of peak) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.specs.split(","):
        spec = ROOT / "specs" / f"{name}.yaml"
        built = {arm: compiled(spec, args.batch, arm == "planar", args.train) for arm in ARMS}
        for arm, (model, session) in built.items():
            plan = model.plan if session is None else session.plan
            assert plan.layouts[plan.input].planar == (arm == "planar"), arm
        node = first_layer(built["planar"][0])
        results = {arm: [] for arm in ARMS}
        for round_ in range(args.rounds):
            order = ARMS if round_ % 2 == 0 else ARMS[::-1]  # ABBA
            for arm in order:
                results[arm].append(measure(*built[arm], args.batch, args.repeats))
        for what in ("first", *(("first backward",) if args.train else ()), "kernels", "wall"):
            planar = [r[what] for r in results["planar"]]
            nhwc = [r[what] for r in results["nhwc"]]
            ratio = statistics.median(n / p for p, n in zip(planar, nhwc))
            rates = ""
            if what == "first":
                peak = statistics.median(r["peak"] for r in results["planar"])
                rate = {arm: statistics.median(r["gflops"] for r in results[arm])
                        for arm in ARMS}
                rates = (f"{rate['planar']:.0f} ({100 * rate['planar'] / peak:.0f}%) / "
                         f"{rate['nhwc']:.0f} ({100 * rate['nhwc'] / peak:.0f}%), "
                         f"peak {peak:.0f}")
            print(f"| {name} | {node} | {what} | {spread(planar)} | {spread(nhwc)} | "
                  f"**{ratio:.2f}x** faster | {rates} |")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
