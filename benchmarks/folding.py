"""Inference with and without folding (README "Folding in inference"), each run in its own process.

    python benchmarks/folding.py [--models vgg_cifar,fashion_convnet_bn,resnet8]
                                 [--batches 64,256] [--rounds 5] [--device D]

Every round runs each (model, batch) twice, folded (the default) and with ``CONVGRAPH_FOLD=0``,
in separate processes and in alternating order (folded first in even rounds), so load from
others on the machine falls on both alike. A process compiles the spec, takes random
parameters, warms up, and times ``inner`` forward passes three times (their median). Printed:
the CPU (vendor, family, model), the load average, and per row the median images/s of the
rounds with their range, and the ratio of the medians. Both sides run untuned (an empty
convgraph cache of their own, kept between rounds, so only the first round compiles cold), so
the ratio is the folding's and not a tuning table's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/machine.py)

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU line benchmarks/machine.py prints with every table (vendor, family, model, name,
    cores, SIMD flags): the machine changes between runs."""
    return machine.cpu_model()["line"]


def child(spec: str, batch: int, device: str | None) -> None:
    """Time the inference of ``spec`` at ``batch``; print one JSON line."""
    import numpy as np

    import convgraph
    from convgraph.verify import random_params

    model = convgraph.compile(spec, device=device, batch=batch)
    model.set_params(random_params(model, 0))
    volume = model.graph.nodes[model.plan.input]["output"]
    x = np.random.default_rng(0).normal(
        size=(batch, volume.depth, volume.height, volume.width)).astype(np.float32)
    for _ in range(2):
        model.forward(x)
    started = time.perf_counter()
    model.forward(x)
    inner = max(2, int(1.0 / max(time.perf_counter() - started, 1e-3)))  # ~1 s per timing
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(inner):
            model.forward(x)
        rates.append(batch * inner / (time.perf_counter() - started))
    print(json.dumps({"rate": statistics.median(rates), "launches": len(model.plan.launches)}))


def measure(spec: str, batch: int, fold: bool, device: str | None, cache: str) -> dict:
    env = {**os.environ, "CONVGRAPH_FOLD": "1" if fold else "0", "CONVGRAPH_CACHE": cache}
    command = [sys.executable, __file__, "--child", spec, "--batch", str(batch)]
    if device:
        command += ["--device", device]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT,
                          check=False)
    if done.returncode:
        sys.exit(f"{spec} batch {batch} (fold {fold}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg_cifar,fashion_convnet_bn,resnet8")
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device")
    parser.add_argument("--child")
    parser.add_argument("--batch", type=int)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.device)
        return
    rows = [(model, int(batch)) for model in args.models.split(",")
            for batch in args.batches.split(",")]
    results = {(row, fold): [] for row in rows for fold in (True, False)}
    launches = {}
    print(f"CPU: {cpu_model()}; load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="convgraph-fold-bench-") as cache:
        for round_ in range(args.rounds):
            for row in rows:
                order = (True, False) if round_ % 2 == 0 else (False, True)
                for fold in order:
                    spec = str(ROOT / "specs" / f"{row[0]}.yaml")
                    result = measure(spec, row[1], fold, args.device, cache)
                    results[(row, fold)].append(result["rate"])
                    launches[(row, fold)] = result["launches"]
            print(f"  round {round_ + 1}/{args.rounds} done, load {os.getloadavg()[0]:.1f}",
                  flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}; medians of {args.rounds} rounds "
          "(range), images/s")
    print("| model | batch | folded | not folded | ratio | launches |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        folded, plain = results[(row, True)], results[(row, False)]
        ratio = statistics.median(folded) / statistics.median(plain)
        print(f"| {row[0]} | {row[1]} | {statistics.median(folded):,.0f} "
              f"({min(folded):,.0f}-{max(folded):,.0f}) | {statistics.median(plain):,.0f} "
              f"({min(plain):,.0f}-{max(plain):,.0f}) | {ratio:.2f}x | "
              f"{launches[(row, False)]} -> {launches[(row, True)]} |")


if __name__ == "__main__":
    main()
