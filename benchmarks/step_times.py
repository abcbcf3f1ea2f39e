"""Median inference and training step times of the convgraph on PYTHONPATH, for A/B checks.

    for i in 1 2 3; do for tree in . ../old-checkout; do
        PYTHONPATH=$tree python benchmarks/step_times.py; done; done

Each run is its own process (run the two trees alternately: the machine's load moves), on the
CPU device at batch 64: VGG-CIFAR, ResNet-8 and the seed network, forward passes and SGD steps.
It uses only API that old checkouts have too (convgraph.compile, TrainingSession), so a refactor
can be timed against the commit before it. Prints one JSON line: the tree, the CPU, and
milliseconds per pass.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import convgraph
from convgraph.pipeline import analyse
from convgraph.train.session import TrainingSession

SPECS = Path(__file__).resolve().parent.parent / "specs"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def median_ms(run, repeats: int) -> float:
    run()  # the first pass compiles kernels on some drivers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 3)


def main() -> None:
    result = {"tree": str(Path(convgraph.__file__).resolve().parent.parent), "cpu": cpu_name()}
    for name in ("vgg_cifar", "resnet8", "seed"):
        spec = str(SPECS / f"{name}.yaml")
        model = convgraph.compile(spec, device="cpu", batch=64)
        volume = model.graph.nodes["input"]["output"]
        x = np.random.default_rng(0).normal(
            size=(64, volume.depth, volume.height, volume.width)).astype(np.float32)
        result[f"{name} infer"] = median_ms(lambda m=model, x=x: m.forward(x), 15)
        session = TrainingSession(analyse(spec), device="cpu", batch=64)
        labels = np.random.default_rng(1).integers(0, 10, 64)
        result[f"{name} train"] = median_ms(
            lambda s=session, x=x, y=labels: s.step(x, y, 0.001), 40 if name == "seed" else 10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
