"""Direct conv register tiles, one layer's site at a time: kernel texts and knobs side by side.

    .venv/bin/python benchmarks/conv_tiles.py --layer "vgg_cifar conv2" --pass forward \\
        --variant "old=HEAD:TILE_PIXELS=8,FILTER_VECTORS=1" --variant "new=:FILTER_VECTORS=2" \\
        [--batch 64] [--rounds 7] [--repeats 5] [--objdump]

A variant is LABEL=SOURCE:KNOBS. SOURCE is a git revision whose kernels/conv.cl is used (empty:
the working tree's) and KNOBS overrides the site's default setting (KEY=VALUE, comma-separated;
a work-group shape as LOCAL=1x4x8).
The site is that of the layer's pass ("forward" or "input grad") in the training plan of a small
network holding the layer (benchmarks/layers.py builds the same); the site's launches in the
training step (not an input gradient's weight transpose, which is no part of the site) run on
zero-filled buffers of the planned sizes, timed by OpenCL events. The variants alternate within
each round (ABBA), and the table gives the median over rounds with the spread (min-max), the
speed-up over the first variant paired round by round (median of the per-round ratios), GFLOP/s
and % of the fp32 FMA peak (kernels/peak.cl, measured after every round, its best taken;
"best": the fastest round's, which the other sessions on a shared machine disturb least), the
CPU model and the load. A variant whose knobs are not a setting of the site is refused (the
plan would run the site's default in its place).
``--objdump`` instead builds each variant in a fresh process with PoCL's temporary files kept
and counts, in the code PoCL generated for the site's conv kernel, the vector fmas, the
shuffles that compete with them for port 5 (vpermps, vbroadcastss from a register, vextract,
vinsert, vshuf), the broadcasts from memory, fmas with an embedded broadcast ({1to16}), and
stack accesses (spills and reloads).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import convgraph  # noqa: E402
from convgraph.codegen import source as source_module  # noqa: E402
from convgraph.codegen.launches import Buffer  # noqa: E402
from convgraph.codegen.tuning import Tuning  # noqa: E402
from convgraph.runtime.inspect import _peak  # noqa: E402
from convgraph.runtime.tune import _ProbePlan, _Tuner  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from layers import LAYERS, layer_graph  # noqa: E402
from machine import probe_event_ms  # noqa: E402
from winograd import cpu_model  # noqa: E402

EXTRA_LAYERS = [  # direct layers of >= 16 channels that benchmarks/layers.py does not list
    ("vgg_cifar", "conv3", "16x16x32", "CONV(64, 3, pad=1)", False, False),
    ("resnet8", "res1/conv1", "32x32x16", "CONV(16, 3, pad=1, bias=false)", False, False),
    ("resnet8", "res2/conv2", "16x16x32", "CONV(32, 3, pad=1, bias=false)", False, False),
    ("resnet8", "res3/conv2", "8x8x64", "CONV(64, 3, pad=1, bias=false)", False, False),
    ("vgg16", "conv3_2", "56x56x256", "CONV(256, 3, pad=1)", False, False),
]
CONV_TEXT = {"": None}  # git revision -> kernels/conv.cl at it (None: the working tree's)
ACTIVE = [""]  # the revision whose conv.cl the next build reads
_original_kernel_file = source_module.kernel_file


def kernel_file(family: str) -> str:
    """kernels/<family>.cl, conv.cl at the revision of the variant being built."""
    if family == "conv" and CONV_TEXT.get(ACTIVE[0]) is not None:
        return CONV_TEXT[ACTIVE[0]]
    return _original_kernel_file(family)


source_module.kernel_file = kernel_file


def parse_variant(text: str) -> tuple[str, str, dict]:
    label, _, rest = text.partition("=")
    revision, _, knobs = rest.partition(":")
    parsed = {}
    for item in filter(None, knobs.split(",")):
        key, _, value = item.partition("=")
        if key == "LOCAL":  # a work-group shape, written 1x4x8 (commas part the knobs)
            value = value.replace("x", ",")
        parsed[key] = int(value) if value.lstrip("-").isdigit() else value
    if revision and revision not in CONV_TEXT:
        CONV_TEXT[revision] = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{revision}:kernels/conv.cl"],
            check=True, capture_output=True, text=True).stdout
    return label, revision, parsed


def layer_site(entry, batch: int, repeats: int, wanted: str):
    """(tuner, the site of the layer's ``wanted`` pass)."""
    _, _, volume, pattern, first, _ = entry
    graph = layer_graph(volume, pattern, first)
    node = list(graph.nodes)[1 if first else 2]
    tuner = _Tuner(graph, None, batch, repeats)
    sites = [s for s in tuner.sites(("train",)) if s.node == node]
    forward = [s for s in sites if s.selector == "CONV_FORWARD"]
    if wanted == "forward":
        return tuner, forward[0]
    grads = [s for s in sites if s.selector == "CONV_BACKWARD_DATA"] or forward[1:]
    return tuner, grads[0]


class SiteTimer:
    def __init__(self, tuner: _Tuner, site, revision: str, knobs: dict):
        ACTIVE[0] = revision
        self.knobs = {**site.default, **knobs}
        if self.knobs not in site.space:  # the plan would run the default instead
            raise SystemExit(f"{self.knobs} is not a setting of the site; its space holds "
                             f"{len(site.space)} settings (tests/test_tuning.py lists them)")
        plan = tuner.plan_with(Tuning().with_choice(site.key, self.knobs), tuner.mode_of[site.key])
        # the training step's launches of the site (the evaluation group repeats the forward)
        self.launches = [launch for launch in plan.launch_groups()["train"]
                         if launch.site == site.key]
        self.flops = sum(launch.flops for launch in self.launches) * tuner.batch
        probe = _ProbePlan(tuner.graph, plan, self.launches, tuner.batch)
        sizes = probe.buffer_sizes(tuner.batch)  # bytes of the buffers the site touches
        self.moved = sum(sizes.get(plan.buffer_name(arg), 0) for launch in self.launches
                         for arg in launch.args if isinstance(arg, Buffer))
        self.executor = tuner.warm_executor(probe, f"conv_tiles {site.node}")
        self.tuner = tuner
        ACTIVE[0] = ""

    def run(self) -> float:
        return probe_event_ms(self.executor, self.tuner)


SHUFFLES = re.compile(r"\b(vpermps|vpermt2ps|vpermi2ps|vextractf\w*|vinsertf\w*|vshuf\w*)\b")


def count_instructions(disassembly: str) -> dict[str, int]:
    lines = [line for line in disassembly.splitlines() if "\t" in line]
    fmas = [line for line in lines if re.search(r"\bvfmadd\w*ps\b", line)]
    return {
        "vfmadd": len(fmas),
        "fma {1to16}": sum("{1to" in line for line in fmas),
        "fma with memory": sum("(" in line for line in fmas),
        "shuffles": sum(bool(SHUFFLES.search(line)) for line in lines),
        "vbroadcastss reg": sum("vbroadcastss %xmm" in line for line in lines),
        "vbroadcastss mem": sum(bool(re.search(r"vbroadcastss\s+-?\w*\(", line))
                                for line in lines),
        "stack": sum("(%rsp)" in line or "(%rbp)" in line for line in lines),
        "instructions": len(lines),
    }


def objdump_child(args) -> int:
    """In a fresh process whose PoCL keeps its temporary files: build and run each variant once,
    then count the instructions of each kernel's .so."""
    entry = chosen_layer(args.layer)
    for text in args.variant:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "POCL_CACHE_DIR": cache,
                   "POCL_LEAVE_KERNEL_COMPILER_TEMP_FILES": "1"}
            subprocess.run([sys.executable, __file__, "--layer", args.layer, "--pass",
                            args.pass_, "--variant", text, "--rounds", "1", "--repeats", "1",
                            "--build-only", "--batch", str(args.batch)], check=True, env=env)
            for so in sorted(Path(cache).rglob("*.so")):
                kernel = so.parent.parent.name
                if "conv" not in kernel or "transpose" in kernel:
                    continue
                text_out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(so)],
                                          capture_output=True, text=True).stdout
                counts = count_instructions(text_out)
                print(f"{entry[0]} {entry[1]} {args.pass_} {text}: {kernel}: "
                      + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
    return 0


def chosen_layer(name: str):
    return next(e for e in LAYERS + EXTRA_LAYERS if f"{e[0]} {e[1]}" == name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", required=True, help="'network layer', e.g. 'vgg_cifar conv2'")
    parser.add_argument("--pass", dest="pass_", default="forward",
                        choices=("forward", "input grad"))
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--objdump", action="store_true")
    parser.add_argument("--samples", action="store_true",
                        help="print each variant's times, round by round (a bimodal spread)")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.objdump:
        return objdump_child(args)
    entry = chosen_layer(args.layer)
    load = os.getloadavg()[0]
    variants = [parse_variant(text) for text in args.variant]
    tuner, site = layer_site(entry, args.batch, args.repeats, args.pass_)
    timers = {label: SiteTimer(tuner, site, revision, knobs)
              for label, revision, knobs in variants}
    if args.build_only:
        return 0
    probe = convgraph.compile({"input": "8x8x8", "pattern": "[INPUT-CONV(8, 3, pad=1)]"})
    # the peak and copy bandwidth before every round and after the last, their best taken: the
    # other sessions slow a measurement down, never up, so the best is the machine's own
    references = [_peak(probe)]
    samples = {label: [] for label in timers}
    order = list(timers)
    for round_ in range(args.rounds):
        for label in order if round_ % 2 == 0 else order[::-1]:
            samples[label].append(timers[label].run())
        references.append(_peak(probe))
    peak, copy = (max(values) for values in zip(*references))
    print(f"CPU: {cpu_model()}; FMA peak {peak:.0f} GFLOP/s, copy {copy:.1f} GB/s (same run); "
          f"load {load:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; batch {args.batch}; {entry[0]} {entry[1]} {entry[2]} "
          f"{entry[3]} {args.pass_}; median of {args.rounds} rounds (min-max)")
    first = samples[order[0]]
    for label, times in samples.items():
        ms = statistics.median(times)
        # the first variant's time over this one's, round by round (the two ran back to back,
        # under the same load), median over rounds: robust to load that moves between rounds
        paired = statistics.median(a / b for a, b in zip(first, times))
        rate = timers[label].flops / ms / 1e6
        knobs = ",".join(f"{k}={v}" for k, v in timers[label].knobs.items())
        moved = timers[label].moved / ms / 1e6  # GB/s of the buffers the site touches
        # the fastest round beside the fastest peak: what the code does when no other process
        # takes its cores (the other sessions only ever slow a round down)
        best = timers[label].flops / min(times) / 1e6
        print(f"  {label:12s} {ms:7.3f} ms ({min(times):.3f}-{max(times):.3f}) "
              f"{rate:5.0f} GFLOP/s {100 * rate / peak:3.0f}%, best {100 * best / peak:3.0f}%, "
              f"{moved:5.1f} GB/s, {paired:.2f}x paired  {knobs}")
        if args.samples:
            print("    " + " ".join(f"{t:.2f}" for t in times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
