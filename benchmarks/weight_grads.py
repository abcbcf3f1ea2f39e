"""Weight-gradient and fc kernel sites, before and after, per layer, on this device.

    .venv/bin/python benchmarks/weight_grads.py [--specs vgg_cifar,resnet8] [--before REV]
                                                [--batch 64] [--rounds 7] [--json OUT]

Every conv weight-gradient site (conv.cl's CONV_BACKWARD_WEIGHTS[_TAPS], timed with its split
sums) and every fc site (dense.cl) of each network's training plan, built twice in one process:
"before" with the kernel files of git revision REV (default: where this branch left main) and
the setting the CPU profile chose there (no rows of taps per work-item), "after" with the
working tree's kernels and today's default. The two run alternately, ABBA within each round
(neither always first); the table gives the median over rounds and the spread (min-max), in
GFLOP/s and % of the fp32 FMA peak (kernels/peak.cl) measured in the same run, with the CPU
model and the load average. A site whose kernels and knobs did not change measures the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from convgraph.codegen import source  # noqa: E402
from convgraph.codegen.tuning import Tuning  # noqa: E402
from convgraph.pipeline import analyse  # noqa: E402
from convgraph.runtime.tune import _Tuner  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from winograd import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SELECTORS = {"CONV_BACKWARD_WEIGHTS", "CONV_BACKWARD_WEIGHTS_TAPS", "DENSE_FORWARD",
             "DENSE_BACKWARD_WEIGHTS", "DENSE_BACKWARD_DATA"}


def files_at(revision: str) -> dict[str, str]:
    """kernels/*.cl as they were at ``revision``."""
    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{path}"],
                              capture_output=True, text=True, check=True).stdout
    names = show("kernels/").split()
    return {name[:-3]: show(f"kernels/{name}") for name in names if name.endswith(".cl")}


def branch_point() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
                          capture_output=True, text=True, check=True).stdout.strip()


def runner_with_files(tuner: _Tuner, site, knobs: dict, files: dict[str, str] | None):
    """_Tuner.runner for the site with ``knobs``, built from ``files`` (None: the working
    tree's kernels)."""
    original = source.kernel_file
    if files is not None:
        source.kernel_file = lambda family: files[family]
    try:
        return tuner.runner(site, knobs)
    finally:
        source.kernel_file = original


def fma_peak(tuner: _Tuner) -> float:
    """GFLOP/s of kernels/peak.cl's FMA loop, best of 5."""
    import pyopencl as cl

    rounds = 256
    text = (source.kernel_file("common") + "\n#define KERNEL_NAME peak\n#define PEAK_FMA 1\n"
            f"#define ROUNDS {rounds}\n" + source.kernel_file("peak"))
    context = tuner.target.context
    kernel = cl.Program(context, text).build().peak
    items = 64 * context.devices[0].max_compute_units * 16
    out = cl.Buffer(context, cl.mem_flags.WRITE_ONLY, 4 * items)
    kernel.set_args(out, np.float32(0.5))
    best = 0.0
    for _ in range(5):
        event = cl.enqueue_nd_range_kernel(tuner.queue, kernel, (items,), None)
        event.wait()
        seconds = (event.profile.end - event.profile.start) * 1e-9
        best = max(best, items * 16 * 8 * 2 * rounds / seconds / 1e9)
    return best


def earlier_default(tuner: _Tuner, site) -> dict:
    """The setting the CPU profile chose for ``site`` before rows of taps per work-item."""
    earlier = replace(tuner.base, grad_tap_columns=False)
    saved, tuner.base = tuner.base, earlier
    try:
        plan = tuner.plan_with(Tuning(), tuner.mode_of[site.key])
    finally:
        tuner.base = saved
    return plan.sites[site.key].default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", default="vgg_cifar,resnet8")
    parser.add_argument("--before", default=None, help="git revision (default: the branch point)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    revision = args.before or branch_point()
    old_files = files_at(revision)
    rows, loads, peaks = [], [os.getloadavg()[0]], []
    for spec in args.specs.split(","):
        tuner = _Tuner(analyse(str(SPECS / f"{spec}.yaml")), "cpu", args.batch, args.repeats)
        sites = [site for site in tuner.sites(("train",)) if site.selector in SELECTORS]
        peaks.append(fma_peak(tuner))
        for site in sites:
            before = earlier_default(tuner, site)
            pair = [runner_with_files(tuner, site, before, old_files),
                    runner_with_files(tuner, site, site.default, None)]
            times: list[list[float]] = [[], []]
            for r in range(args.rounds):
                order = (0, 1, 1, 0) if r % 2 == 0 else (1, 0, 0, 1)
                for which in order:
                    times[which].append(pair[which]())
            gflop = tuner.flops_of[site.key] * args.batch / 1e9
            rows.append({"spec": spec, "node": site.node, "kernel": site.selector,
                         "before_knobs": before, "after_knobs": site.default,
                         "before_ms": times[0], "after_ms": times[1], "gflop": gflop})
        peaks.append(fma_peak(tuner))
        loads.append(os.getloadavg()[0])
    peak = statistics.median(peaks)
    print(f"{cpu_model()}; load {min(loads):.1f}-{max(loads):.1f}; FMA peak {peak:.0f} GFLOP/s "
          f"({min(peaks):.0f}-{max(peaks):.0f}); before = {revision[:10]}, batch {args.batch}, "
          f"{args.rounds} rounds")
    print("\n| layer | kernel | before ms | after ms | after/before | GFLOP/s after (% of peak) |"
          "\n|---|---|---|---|---|---|")
    for row in rows:
        b, a = statistics.median(row["before_ms"]), statistics.median(row["after_ms"])
        rate = row["gflop"] / a * 1e3
        same = " (knobs unchanged)" if row["before_knobs"] == row["after_knobs"] else ""
        if row["after_knobs"].get("ALGORITHM", "direct") != "direct":
            same = f" ({row['after_knobs']['ALGORITHM']}: kernels unchanged)"
        print(f"| {row['spec']} {row['node']} | {row['kernel']}{same} | {b:.3f} "
              f"({min(row['before_ms']):.3f}-{max(row['before_ms']):.3f}) | {a:.3f} "
              f"({min(row['after_ms']):.3f}-{max(row['after_ms']):.3f}) | {b / a:.2f}x | "
              f"{rate:.0f} ({100 * rate / peak:.0f}%) |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "loads": loads,
                                               "peaks": peaks, "before": revision,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
