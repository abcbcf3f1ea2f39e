"""The tuner's searches compared: what each finds within the same budget, timed alternately.

    python benchmarks/tune_search.py [--budget 30] [--rounds 3] [--models vgg_cifar,resnet8]

For each search (``two-stage``, ``descent``) the networks are tuned with ``convgraph tune
--budget B`` (both modes, batch 64) into a cache folder of that search's own, then each network's
training step and inference pass at batch 64 are timed in a fresh process per (round, search),
the searches alternating (and an untuned arm, an empty cache, beside them), each process taking
the median of its passes. Each arm has its own convgraph and PoCL caches, empty at the start, so
neither search compiles kernels for the other. Prints a table of medians over the rounds
(min-max across rounds), each search's ratio to the untuned arm, the CPU line and the load.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_model, load_average  # noqa: E402

SEARCHES = ("two-stage", "descent")
BATCH = 64


def arm_environment(cache: Path) -> dict:
    """An arm's own convgraph and PoCL caches, empty at first: no arm compiles for another."""
    return {**os.environ, "CONVGRAPH_CACHE": str(cache), "POCL_CACHE_DIR": str(cache / "pocl")}


def tune(search: str, cache: Path, models: list[str], budget: float, seed: int) -> dict:
    """``convgraph tune`` of every model with ``search`` into ``cache``: the sites tuned, not
    reached and the seconds, by model."""
    specs = [str(ROOT / "specs" / f"{name}.yaml") for name in models]
    done = subprocess.run(
        [sys.executable, "-c", "from convgraph.cli import run_as_program; run_as_program()",
         "tune", *specs, "--budget", str(budget),
         "--search", search, "--seed", str(seed), "--batch", str(BATCH), "--device", "cpu",
         "--json"],
        env=arm_environment(cache), capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    return {model["model"]: {"sites": len(model["sites"]), "not_reached": model["not_reached"],
                             "seconds": round(model["seconds"], 1),
                             "tried": sum(site["tried"] for site in model["sites"])}
            for model in report["models"]}


def changed(cache: Path) -> list[str]:
    """The sites whose tuned setting is not their default (layer kernel: default -> tuned ms)."""
    found = []
    for table in sorted((cache / "tuning").glob("*.json")):
        for entry in json.loads(table.read_text())["entries"].values():
            if entry["ms"] != entry["default_ms"]:
                found.append(f"{entry['node']} {entry['kernel']} ({entry['default_ms']:.1f} -> "
                             f"{entry['ms']:.1f} ms)")
    return found or ["none"]


def child(models: list[str]) -> None:
    """One timing process: each model's median inference pass and SGD step, in ms."""
    import numpy as np

    import convgraph
    from benchmarks.step_times import median_ms
    from convgraph.pipeline import analyse
    from convgraph.train.session import TrainingSession

    result = {}
    for name in models:
        spec = str(ROOT / "specs" / f"{name}.yaml")
        model = convgraph.compile(spec, device="cpu", batch=BATCH)
        volume = model.graph.nodes["input"]["output"]
        x = np.random.default_rng(0).normal(
            size=(BATCH, volume.depth, volume.height, volume.width)).astype(np.float32)
        result[f"{name} infer"] = median_ms(lambda m=model, x=x: m.forward(x), 10)
        session = TrainingSession(analyse(spec), device="cpu", batch=BATCH)
        labels = np.random.default_rng(1).integers(0, 10, BATCH)
        result[f"{name} train"] = median_ms(
            lambda s=session, x=x, y=labels: s.step(x, y, 0.001), 7)
    print(json.dumps(result))


def timed(cache: Path, models: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", ",".join(models)],
                          env=arm_environment(cache),
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="vgg_cifar,resnet8")
    parser.add_argument("--reuse", default=None, metavar="FOLDER",
                        help="time the arms an earlier run tuned in FOLDER (no tuning)")
    parser.add_argument("--descent-first", action="store_true",
                        help="tune with descent first (the load moves: alternate runs)")
    parser.add_argument("--seed", type=int, default=0, help="the two-stage search's seed")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child.split(","))
        return
    models = args.models.split(",")
    print(cpu_model()["line"])
    print(f"load before: {load_average()}")
    folder = Path(args.reuse or tempfile.mkdtemp(prefix="tune-search-"))
    print(f"arms in {folder}")
    arms = {"untuned": folder / "untuned", **{s: folder / s for s in SEARCHES}}
    for search in (() if args.reuse else SEARCHES[::-1] if args.descent_first else SEARCHES):
        started = time.perf_counter()
        print(f"{search}: {tune(search, arms[search], models, args.budget, args.seed)} "
              f"({time.perf_counter() - started:.0f} s with start-up)", flush=True)
    for search in SEARCHES:
        print(f"{search} chose other than the default at: {', '.join(changed(arms[search]))}")
    times: dict[str, list[dict]] = {arm: [] for arm in arms}
    for round_ in range(args.rounds):
        order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
        for arm in order:
            times[arm].append(timed(arms[arm], models))
        print(f"round {round_ + 1}: load {load_average()}; "
              f"{json.dumps({arm: runs[-1] for arm, runs in times.items()})}", flush=True)
    print(f"\nbatch {BATCH}, ms per pass: median over {args.rounds} rounds (min-max); x: the "
          "median over the rounds of the untuned arm's time / this one's in the same round")
    keys = list(times["untuned"][0])
    print(f"| pass | {' | '.join(arms)} |")
    print(f"|---|{'---|' * len(arms)}")
    for key in keys:
        cells = []
        for arm in arms:
            values = [r[key] for r in times[arm]]
            median = statistics.median(values)
            ratios = [u[key] / r[key] for u, r in zip(times["untuned"], times[arm])]
            ratio = "" if arm == "untuned" else f", {statistics.median(ratios):.2f}x"
            cells.append(f"{median:.1f} ({min(values):.1f}-{max(values):.1f}){ratio}")
        print(f"| {key} | {' | '.join(cells)} |")
    print(f"load after: {load_average()}")


if __name__ == "__main__":
    main()
