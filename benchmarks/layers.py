"""The weak spots of the direct kernels, per layer and pass: before and after, on this device.

    .venv/bin/python benchmarks/layers.py [--batch 64] [--rounds 5] [--repeats 5] [--json OUT]

Each layer of the table is a small network holding that layer (after a 1x1 conv, so that its
input has a gradient, except for first layers, whose input has none in a real network) and a
small fc for the loss. Its training plan is built twice: "before" with each of the layer's
tuning sites set to the setting the CPU profile chose before the weak-spot work (README, "Weak
spots"; both run today's kernel text: benchmarks/conv_tiles.py sets an earlier revision's
conv.cl beside it), "after" with today's defaults; every launch of the layer (forward, weight
gradient with its split sums and bias, input gradient with any weight transpose) runs on
zero-filled buffers of the planned sizes, timed by OpenCL events. The two alternate within each
round in ABBA order (neither always runs first); the table gives the median over rounds and the
spread (min-max), since other work shares the machine, and rows marked "same kernels" time
identical kernels twice: they show the noise. Compute-bound passes report GFLOP/s and % of the
device's fp32 FMA peak (kernels/peak.cl, measured in the same run); pooling and batchnorm report
GB/s (bytes of the buffers the pass touches / time) and % of the copy bandwidth measured beside
it (above 100%: the pass's buffers stay in cache, the copy's 64 MiB do not). The CPU model is
printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import convgraph  # noqa: E402
from convgraph.codegen.launches import Buffer  # noqa: E402
from convgraph.codegen.tuning import Tuning  # noqa: E402
from convgraph.pipeline import analyse  # noqa: E402
from convgraph.runtime.inspect import _peak  # noqa: E402
from convgraph.runtime.tune import _ProbePlan, _Tuner  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from winograd import cpu_model  # noqa: E402

# (network, layer, input volume, the layer as a pattern, is it a first layer, memory-bound)
LAYERS = [
    ("vgg_cifar", "conv1", "32x32x3", "CONV(32, 3, pad=1)", True, False),
    ("resnet8", "conv1", "32x32x3", "CONV(16, 3, pad=1, bias=false)", True, False),
    ("vgg_cifar", "conv2", "32x32x32", "CONV(32, 3, pad=1)", False, False),
    ("resnet8", "res2/conv1", "32x32x16", "CONV(32, 3, stride=2, pad=1, bias=false, "
     "rounding=floor)", False, False),
    ("resnet8", "res2/proj", "32x32x16", "CONV(32, 1, stride=2, bias=false, "
     "rounding=floor)", False, False),
    ("resnet8", "res3/conv1", "16x16x32", "CONV(64, 3, stride=2, pad=1, bias=false, "
     "rounding=floor)", False, False),
    ("resnet8", "res3/proj", "16x16x32", "CONV(64, 1, stride=2, bias=false, "
     "rounding=floor)", False, False),
    ("vgg_cifar", "fc1", "4x4x128", "FC(256)", False, False),
    ("vgg_cifar", "pool1", "32x32x32", "POOL", False, True),
    ("resnet8", "bn1", "32x32x16", "BATCHNORM", False, True),
]


LOADS: list[float] = []


def before(site) -> dict:
    """The setting the CPU profile chose for ``site`` before the weak-spot work: every knob it
    changed set back (the sites' spaces still hold those settings)."""
    default = site.default
    if site.selector == "CONV_BACKWARD_DATA":  # the filter-vector body, its first setting
        return next(k for k in site.space if k["BODY"] == "filters")
    few_channels = site.selector == "CONV_FORWARD" and default["CHANNEL_STEP"] == 1
    if few_channels or site.selector == "CONV_BACKWARD_WEIGHTS_TAPS":
        return {**default, "FILTER_VECTORS": 1}
    if site.selector == "CONV_FORWARD":  # 1 vector of filters, 8 channels a step where they fit
        step = max(k["CHANNEL_STEP"] for k in site.space if k["CHANNEL_STEP"] <= 8)
        old = {**default, "FILTER_VECTORS": 1, "CHANNEL_STEP": step}
        return old if old in site.space else default
    if site.selector == "DENSE_BACKWARD_WEIGHTS":
        return {**default, "UNIT_VECTORS": 1}
    if site.selector == "DENSE_BACKWARD_DATA":
        return {**default, "TILE_ROWS": 16}
    return default


def layer_graph(volume: str, layer: str, first: bool):
    channels = int(volume.split("x")[-1])
    lead = "" if first else f"CONV({channels}, 1)-"
    return analyse({"input": volume, "pattern": f"[INPUT-{lead}{layer}-FC(2)]"})


def pass_of(group: str, selector: str) -> str:
    """forward, weight grad or input grad (the last also for a pool's or batchnorm's
    backward, which has no weights to speak of)."""
    if group == "forward":
        return "forward"
    weights = "WEIGHTS" in selector and "TRANSPOSE" not in selector
    return "weight grad" if weights or "SUM" in selector or "REDUCE" in selector \
        else "input grad"


class LayerTimer:
    """Times every launch of one node of a training plan, per pass, with given site knobs."""

    def __init__(self, tuner: _Tuner, node: str, knobs: dict[str, dict]):
        tuning = Tuning()
        for key, choice in knobs.items():
            tuning = tuning.with_choice(key, choice)
        plan = tuner.plan_with(tuning, "train")
        step = plan.launch_groups()["train"]  # forward, the loss, backward
        loss = next(i for i, launch in enumerate(step)
                    if "CROSS_ENTROPY" in plan.kernels[launch.kernel].selector)
        self.launches = [("forward" if i < loss else "backward", launch)
                         for i, launch in enumerate(step) if launch.node == node]
        probe = _ProbePlan(tuner.graph, plan, [launch for _, launch in self.launches],
                           tuner.batch)
        sizes = probe.buffer_sizes(tuner.batch)
        self.passes = [pass_of(group, plan.kernels[launch.kernel].selector)
                       for group, launch in self.launches]
        self.flops = {p: 0 for p in self.passes}
        self.bytes = {p: 0 for p in self.passes}
        for name, (_, launch) in zip(self.passes, self.launches):
            self.flops[name] += launch.flops * tuner.batch
            self.bytes[name] += sum(sizes.get(plan.buffer_name(a), 0) for a in launch.args
                                    if isinstance(a, Buffer))  # bytes
        # what each pass compiles, to tell a pass whose kernels did not change
        self.kernels = {p: [] for p in self.passes}
        for name, (_, launch) in zip(self.passes, self.launches):
            spec = plan.kernels[launch.kernel]
            self.kernels[name].append((spec.selector, sorted(spec.defines.items(), key=str)))
        self.batch, self.queue, self.repeats = tuner.batch, tuner.queue, tuner.repeats
        self.executor = tuner.warm_executor(probe, f"layers {node}")

    def run(self) -> dict[str, float]:
        """ms per pass, the median of ``repeats`` runs."""
        samples = []
        for _ in range(self.repeats):
            events: list = []
            self.executor.enqueue(self.batch, events, group="probe")
            self.queue.finish()
            per_pass = dict.fromkeys(self.passes, 0.0)
            for name, event in zip(self.passes, events):
                per_pass[name] += (event.profile.end - event.profile.start) * 1e-6
            samples.append(per_pass)
        return {name: statistics.median(s[name] for s in samples) for name in samples[0]}


def measure_layer(entry, batch: int, rounds: int, repeats: int) -> list[dict]:
    network, layer, volume, pattern, first, memory = entry
    graph = layer_graph(volume, pattern, first)
    node = list(graph.nodes)[1 if first else 2]
    tuner = _Tuner(graph, None, batch, repeats)
    sites = [site for site in tuner.sites(("train",)) if site.node == node]
    variants = {"before": {s.key: before(s) for s in sites},
                "after": {s.key: s.default for s in sites}}
    timers = {name: LayerTimer(tuner, node, knobs) for name, knobs in variants.items()}
    samples = {name: [] for name in timers}
    order = list(timers)
    for round_ in range(rounds):  # ABBA: neither variant always runs first
        for name in order if round_ % 2 == 0 else order[::-1]:
            samples[name].append(timers[name].run())
    rows = []
    after = timers["after"]
    for name in dict.fromkeys(after.passes):
        row = {"network": network, "layer": layer, "shape": f"{volume} {pattern}",
               "pass": name, "memory_bound": memory, "gflop": after.flops[name] / 1e9,
               "gbytes": after.bytes[name] / 1e9,
               "changed": timers["before"].kernels.get(name) != after.kernels[name]}
        for variant in timers:
            times = [s[name] for s in samples[variant] if name in s]
            row[variant] = {"ms": statistics.median(times), "min": min(times),
                            "max": max(times)}
        row["settings"] = {v: {k.split(":")[0]: knobs for k, knobs in variants[v].items()}
                           for v in variants}
        rows.append(row)
    return rows


def table(rows: list[dict], peak: float, copy: float, args, started: str) -> str:
    lines = [f"CPU: {cpu_model()}; fp32 FMA peak {peak:.0f} GFLOP/s, copy {copy:.1f} GB/s "
             f"(kernels/peak.cl, same run); load average {LOADS[0]:.1f} at the start, "
             f"{os.getloadavg()[0]:.1f} at the end; batch {args.batch}; {started}; median of "
             f"{args.rounds} alternating rounds (each the median of {args.repeats} runs), "
             "spread min-max",
             "",
             "| layer | shape | pass | before ms | after ms | after/before | rate after "
             "| % of peak |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        b, a = row["before"], row["after"]
        ratio = b["ms"] / a["ms"] if a["ms"] else float("nan")
        if row["memory_bound"]:
            rate = row["gbytes"] / (a["ms"] / 1e3)
            rate_text, share = f"{rate:.1f} GB/s", f"{100 * rate / copy:.0f}% of copy"
        else:
            rate = row["gflop"] / (a["ms"] / 1e3)
            rate_text, share = f"{rate:.0f} GFLOP/s", f"{100 * rate / peak:.0f}%"
        same = "" if row["changed"] else " (same kernels)"
        lines.append(f"| {row['network']} {row['layer']} | {row['shape']} | {row['pass']} | "
                     f"{b['ms']:.3f} ({b['min']:.3f}-{b['max']:.3f}) | "
                     f"{a['ms']:.3f} ({a['min']:.3f}-{a['max']:.3f}) | {ratio:.2f}x{same} | "
                     f"{rate_text} | {share} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="runs per round (median)")
    parser.add_argument("--layers", help="comma-separated 'network layer' names (default all)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    chosen = LAYERS
    if args.layers:
        wanted = set(args.layers.split(","))
        chosen = [e for e in LAYERS if f"{e[0]} {e[1]}" in wanted]

    LOADS.append(os.getloadavg()[0])  # other work on the machine, printed with the table
    probe = convgraph.compile({"input": "8x8x8", "pattern": "[INPUT-CONV(8, 3, pad=1)]"})
    peak_before, copy_before = _peak(probe)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    for entry in chosen:
        for row in measure_layer(entry, args.batch, args.rounds, args.repeats):
            rows.append(row)
            print(f"{row['network']} {row['layer']} {row['pass']}: before "
                  f"{row['before']['ms']:.3f} ms, after {row['after']['ms']:.3f} ms", flush=True)
    peak_after, copy_after = _peak(probe)
    peak, copy = max(peak_before, peak_after), max(copy_before, copy_after)
    print()
    print(table(rows, peak, copy, args, started))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"cpu": cpu_model(), "device": probe.info.label, "started": started,
             "batch": args.batch, "rounds": args.rounds, "repeats": args.repeats,
             "peak_gflops": [peak_before, peak_after], "copy_gbs": [copy_before, copy_after],
             "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
