"""Inference with and without folding (README "Folding in inference"), each run in its own process.

    python benchmarks/folding.py [--models vgg_cifar,fashion_convnet_bn,resnet8,resnet18@32x32x3]
                                 [--batches 64,256] [--rounds 5] [--arms all,none]
                                 [--kernels] [--interleaved [--blocks]] [--device D]

A model is a spec in specs/, optionally with another input volume after an ``@`` (``--set
input=...``: ``resnet18@32x32x3`` is ResNet-18 on CIFAR-sized images). An arm is a
``CONVGRAPH_FOLD`` setting: ``all`` (1, the default plan), ``none`` (0), or a list of fold kinds
joined by ``+`` (``affine+pool_window``: the folds before the residual sums, so that the sums'
own gain shows). Every round runs each (model, batch) once per arm, each in a separate process, the
arms' order rotating from round to round, so load from others on the machine falls on all
alike. A process compiles the spec, takes random parameters, warms up, and times ``inner``
forward passes three times (their median); with ``--kernels`` it then also sums the OpenCL
event times of one pass's kernels (runtime/inspect.py's per-layer profile, the median of 10
passes per layer), which the load moves less than wall time. Printed: the CPU (vendor, family,
model), the load average, and per row the median images/s of the rounds with their range, the
ratio of each arm's median to the last arm's, and the launches per pass of each arm. Every arm
runs untuned (an empty convgraph cache of its own, kept between rounds, so only the first
round compiles cold), so the ratio is the folding's and not a tuning table's.

``--interleaved`` instead compiles every arm in one process per (model, batch) and alternates
them pass by pass (``--rounds`` rounds, the arms' order reversed every other round: ABBA), each
turn one runtime/inspect.py profile of 3 passes: the kernels' event times and the wall time of
``forward``. Load that moves within seconds then falls on every arm alike, which separate
processes a minute apart do not get. ``--blocks`` adds, per block of the spec (a layer name's
part before its first ``/``: ``res2``), each arm's kernel time a pass, median and minimum of
the rounds: where a fold's gain is, whatever the rest of the pass does.
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
ARMS = {"all": "1", "none": "0"}  # arm name -> CONVGRAPH_FOLD; else kinds joined by +


def cpu_model() -> str:
    """The CPU line benchmarks/machine.py prints with every table (vendor, family, model, name,
    cores, SIMD flags): the machine changes between runs."""
    return machine.cpu_model()["line"]


def spec_and_overrides(model: str) -> tuple[str, list[str]]:
    """``resnet18@32x32x3`` -> (the spec's path, ["input=32x32x3"])."""
    name, _, volume = model.partition("@")
    return str(ROOT / "specs" / f"{name}.yaml"), [f"input={volume}"] if volume else []


def child(model_name: str, batch: int, device: str | None, kernels: bool) -> None:
    """Time the inference of ``model_name`` at ``batch``; print one JSON line."""
    import numpy as np

    import convgraph
    from convgraph.verify import random_params

    spec, overrides = spec_and_overrides(model_name)
    model = convgraph.compile(spec, device=device, batch=batch, overrides=overrides)
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
    result = {"rate": statistics.median(rates), "launches": len(model.plan.launches)}
    if kernels:
        from convgraph.runtime.inspect import profile_inference

        result["kernel_ms"] = profile_inference(model, batch).total_ms
    print(json.dumps(result))


def interleaved(model_name: str, batch: int, arms: list[str], rounds: int,
                device: str | None) -> dict:
    """Every arm compiled in this process, then profiled in turns: {arm: {"kernel_ms": [...],
    "wall_ms": [...], "launches": n}}."""
    import convgraph
    from convgraph.runtime.inspect import profile_inference
    from convgraph.verify import random_params

    spec, overrides = spec_and_overrides(model_name)
    models = {}
    for arm in arms:
        os.environ["CONVGRAPH_FOLD"] = arm_setting(arm)  # read when the plan is made
        models[arm] = convgraph.compile(spec, device=device, batch=batch, overrides=overrides)
        models[arm].set_params(random_params(models[arm], 0))
    found = {arm: {"kernel_ms": [], "wall_ms": [], "blocks": [],
                   "launches": len(models[arm].plan.launches)} for arm in arms}
    for round_ in range(rounds):
        for arm in arms if round_ % 2 == 0 else arms[::-1]:
            profile = profile_inference(models[arm], batch, repeats=3)
            found[arm]["kernel_ms"].append(profile.total_ms)
            found[arm]["wall_ms"].append(profile.wall_ms)
            blocks: dict[str, float] = {}
            for timing in profile.timings:
                block = timing.node.split("/")[0]
                blocks[block] = blocks.get(block, 0.0) + timing.milliseconds
            found[arm]["blocks"].append(blocks)
    return found


def print_blocks(row, arms: list[str], found: dict) -> None:
    """Each block's kernel ms a pass per arm: median / minimum of the rounds."""
    print(f"\n{row[0]} batch {row[1]}, kernel ms a pass by block (median / min of the rounds)")
    print("| block | " + " | ".join(arms) + " |")
    print("|---|" + "---|" * len(arms))
    for block in found[arms[0]]["blocks"][0]:
        cells = []
        for arm in arms:
            values = [blocks.get(block, 0.0) for blocks in found[arm]["blocks"]]
            cells.append(f"{statistics.median(values):.3f} / {min(values):.3f}")
        print(f"| {block} | " + " | ".join(cells) + " |")


def arm_setting(arm: str) -> str:
    return ARMS.get(arm, arm.replace("+", ","))


def measure(model: str, batch: int, arm: str, device: str | None, cache: str,
            kernels: bool) -> dict:
    env = {**os.environ, "CONVGRAPH_FOLD": arm_setting(arm), "CONVGRAPH_CACHE": cache}
    command = [sys.executable, __file__, "--child", model, "--batch", str(batch)]
    command += ["--device", device] if device else []
    command += ["--kernels"] if kernels else []
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT,
                          check=False)
    if done.returncode:
        sys.exit(f"{model} batch {batch} (arm {arm}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _spread(values: list[float], digits: int = 0) -> str:
    """The median (range) of ``values``."""
    return (f"{statistics.median(values):,.{digits}f} "
            f"({min(values):,.{digits}f}-{max(values):,.{digits}f})")


def print_table(rows, arms: list[str], results: dict, launches: dict, key: str,
                title: str, digits: int = 0) -> None:
    reference = arms[-1]
    print(f"\n{title}")
    print("| model | batch | " + " | ".join(arms) + " | " + " | ".join(
        f"{arm} / {reference}" for arm in arms[:-1]) + " | launches |")
    print("|---|---|" + "---|" * (2 * len(arms)))
    for row in rows:
        values = {arm: [r[key] for r in results[(row, arm)]] for arm in arms}
        # images/s: higher is better, so arm / reference; kernel ms: reference / arm
        ratios = [statistics.median(values[arm]) / statistics.median(values[reference])
                  for arm in arms[:-1]]
        if key == "kernel_ms":
            ratios = [1 / ratio for ratio in ratios]
        print(f"| {row[0]} | {row[1]} | " + " | ".join(
            _spread(values[arm], digits) for arm in arms) + " | " + " | ".join(
            f"{ratio:.2f}x" for ratio in ratios) + " | " + " -> ".join(
            str(launches[(row, arm)]) for arm in reversed(arms)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg_cifar,fashion_convnet_bn,resnet8")
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--arms", default="all,none",
                        help="CONVGRAPH_FOLD settings, the reference last: all, none, or kinds "
                             "joined by + (affine+pool_window)")
    parser.add_argument("--kernels", action="store_true",
                        help="also sum the kernels' OpenCL event times per pass")
    parser.add_argument("--interleaved", action="store_true",
                        help="all arms in one process per row, alternating pass by pass")
    parser.add_argument("--blocks", action="store_true",
                        help="with --interleaved: each block's kernel time per arm")
    parser.add_argument("--device")
    parser.add_argument("--child")
    parser.add_argument("--batch", type=int)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.device, args.kernels)
        return
    rows = [(model, int(batch)) for model in args.models.split(",")
            for batch in args.batches.split(",")]
    arms = args.arms.split(",")
    if args.interleaved:
        main_interleaved(rows, arms, args.rounds, args.device, args.blocks)
        return
    results = {(row, arm): [] for row in rows for arm in arms}
    launches = {}
    print(f"CPU: {cpu_model()}; load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="convgraph-fold-bench-") as cache:
        for round_ in range(args.rounds):
            for row in rows:
                shift = round_ % len(arms)  # each arm first in turn
                for arm in arms[shift:] + arms[:shift]:
                    result = measure(*row, arm, args.device, cache, args.kernels)
                    results[(row, arm)].append(result)
                    launches[(row, arm)] = result["launches"]
            print(f"  round {round_ + 1}/{args.rounds} done, load {os.getloadavg()[0]:.1f}",
                  flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}; medians of {args.rounds} rounds "
          "(range)")
    print_table(rows, arms, results, launches, "rate", "images/s (wall time of forward)")
    if args.kernels:
        print_table(rows, arms, results, launches, "kernel_ms",
                    "kernel time per pass, ms (sum of OpenCL event times)", digits=2)


def main_interleaved(rows, arms: list[str], rounds: int, device: str | None,
                     blocks: bool = False) -> None:
    print(f"CPU: {cpu_model()}; load average at start {os.getloadavg()[0]:.1f}; arms "
          f"interleaved in one process per row, {rounds} rounds of 3 passes each")
    results, launches = {}, {}
    with tempfile.TemporaryDirectory(prefix="convgraph-fold-bench-") as cache:
        os.environ["CONVGRAPH_CACHE"] = cache
        for row in rows:
            found = interleaved(*row, arms, rounds, device)
            if blocks:
                print_blocks(row, arms, found)
            for arm in arms:
                # one entry a round, as the separate-process table's
                results[(row, arm)] = [{"kernel_ms": k, "rate": row[1] * 1000 / w}
                                       for k, w in zip(found[arm]["kernel_ms"],
                                                       found[arm]["wall_ms"])]
                launches[(row, arm)] = found[arm]["launches"]
            print(f"  {row[0]} batch {row[1]} done, load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}; medians of {rounds} rounds (range)")
    print_table(rows, arms, results, launches, "rate",
                "images/s (median wall time of 3 forward passes a round)")
    print_table(rows, arms, results, launches, "kernel_ms",
                "kernel time per pass, ms (sum of OpenCL event times)", digits=2)


if __name__ == "__main__":
    main()
