"""One training step per kernel: where the backward pass spends its time, on this device.

    .venv/bin/python benchmarks/step_kernels.py [--spec vgg_cifar] [--batch 64] [--repeats 10]
                                                [--top 25] [--json OUT]

`convgraph run --profile` sums a layer's launches per phase; this splits them by kernel
(the selector of kernels/<family>.cl each launch runs), so that a step's time reads as
forward, input gradients, weight gradients, split sums, bias sums, fc, pooling, batchnorm,
optimizer. Event times of the step's launches (enqueued as TrainingSession.step enqueues
them), the median over repeats per launch; the FMA peak (kernels/peak.cl) measured in the same
run, and the CPU model and load average printed with the table. Only ratios from one run
compare: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import convgraph  # noqa: E402
from convgraph.pipeline import analyse  # noqa: E402
from convgraph.runtime.inspect import _peak, _phased, step_runners  # noqa: E402
from convgraph.train.session import TrainingSession  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from winograd import cpu_model  # noqa: E402

SPECS = Path(__file__).resolve().parent.parent / "specs"


def kernel_class(phase: str, family: str, selector: str) -> str:
    """The share of the step a launch counts in: its phase, and for the backward pass what the
    kernel computes (the selectors' own names say it)."""
    if phase != "backward":
        return phase
    name = selector.upper()
    if "SUM_SPLITS" in name:
        return "backward: split sums"
    if "WEIGHT" in name and "TRANSPOSE" not in name:
        return f"backward: {family} weight gradients"
    return f"backward: {family} other (input gradients, transposes, bias)"


def step_samples(session, repeats: int) -> list[dict]:
    """Per launch of one training step: phase, node, kernel, its median milliseconds."""
    plan, batch = session.plan, session.batch
    one_step, _ = step_runners(session)
    phased = _phased(plan)
    times: list[list[float]] = [[] for _ in phased]
    for _ in range(repeats):
        for slot, event in zip(times, one_step()):
            slot.append((event.profile.end - event.profile.start) * 1e-6)
    rows = []
    for (phase, launch), samples in zip(phased, times):
        spec = plan.kernels[launch.kernel]
        rows.append({"phase": phase, "node": launch.node, "family": spec.family,
                     "selector": spec.selector, "ms": statistics.median(samples),
                     "gflop": launch.flops * batch / 1e9})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="vgg_cifar")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json")
    args = parser.parse_args()
    spec = str(SPECS / f"{args.spec}.yaml") if "/" not in args.spec else args.spec
    model = convgraph.compile(spec, device="cpu", batch=args.batch)
    session = TrainingSession(analyse(spec), device="cpu", batch=args.batch)
    rows = step_samples(session, args.repeats)
    peak, copy = _peak(model)
    total = sum(row["ms"] for row in rows)
    print(f"{args.spec} training step, batch {args.batch}, {cpu_model()}, load "
          f"{os.getloadavg()[0]:.1f}; FMA peak {peak:.0f} GFLOP/s, copy {copy:.1f} GB/s; "
          f"kernel time {total:.1f} ms")
    shares: dict = {}
    for row in rows:
        key = kernel_class(row["phase"], row["family"], row["selector"])
        shares[key] = shares.get(key, 0.0) + row["ms"]
    print("\n| share | ms | % of step |\n|---|---|---|")
    for key, ms in sorted(shares.items(), key=lambda item: -item[1]):
        print(f"| {key} | {ms:.2f} | {100 * ms / total:.0f}% |")
    print("\n| phase | node | kernel | ms | GFLOP/s (% of peak) |\n|---|---|---|---|---|")
    for row in sorted(rows, key=lambda row: -row["ms"])[:args.top]:
        rate = row["gflop"] / row["ms"] * 1e3 if row["gflop"] and row["ms"] else 0.0
        rate_text = f"{rate:.0f} ({100 * rate / peak:.0f}%)" if rate else "-"
        print(f"| {row['phase']} | {row['node']} | {row['family']}:{row['selector']} | "
              f"{row['ms']:.3f} | {rate_text} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"spec": args.spec, "batch": args.batch,
                                               "cpu": cpu_model(), "peak_gflops": peak,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
