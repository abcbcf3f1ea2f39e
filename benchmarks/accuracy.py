"""Accuracy benchmark: train the Fashion-MNIST networks with `convgraph run` and report test
accuracy against the published figures, with epochs, minutes and images/s on this machine.

    python benchmarks/accuracy.py [--models lenet5,fashion_convnet,fashion_convnet_bn]
                                  [--device pocl] [--json results.json] [--out DIR]

Each model trains with its spec's own train: settings (Debian's dataset-fashion-mnist provides
the data), writing metrics and checkpoints under --out. This takes minutes to an hour on two
CPU cores, so it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_model  # noqa: E402

# the published figure for each architecture (Fashion-MNIST benchmark table and the issue)
TARGETS = {
    "lenet5": ("LeNet-5, 5 epochs", 0.89),
    "fashion_convnet": ("2 Conv+pooling (published 0.916)", 0.916),
    "fashion_convnet_bn": ("2 Conv+pooling+BN (published 0.934; target 0.93)", 0.93),
}


def run(model: str, device: str | None, out: Path) -> dict:
    folder = out / model
    folder.mkdir(parents=True, exist_ok=True)
    metrics = folder / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    command = [sys.executable, "-m", "convgraph.cli", "run", str(ROOT / "specs" / f"{model}.yaml"),
               "--metrics", str(metrics), "--checkpoint-dir", str(folder / "checkpoints")]
    if device:
        command += ["--device", device]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    minutes = (time.perf_counter() - started) / 60
    if done.returncode != 0:
        raise SystemExit(f"{model} failed:\n{done.stderr}")
    history = [json.loads(line) for line in metrics.read_text().splitlines()]
    last = history[-1]
    speeds = sorted(h["images_per_s"] for h in history)
    return {"model": model, "epochs": len(history), "test_accuracy": last["test_accuracy"],
            "best_test_accuracy": max(h["test_accuracy"] for h in history),
            "target": TARGETS[model][1], "met": last["test_accuracy"] >= TARGETS[model][1],
            "minutes": round(minutes, 1), "median_images_per_s": speeds[len(speeds) // 2],
            "device": _device_line(done.stdout)}


def kernels_used(model: str, device: str | None) -> dict:
    """{kernel family: kernels} of the model's training plan on the device, and the conv
    algorithms its tuned sites chose (direct unless Winograd was), to say which kernels the
    accuracy figures come from."""
    import convgraph
    from convgraph.codegen.training import plan_training
    from convgraph.runtime.target import Target

    graph = convgraph.analyse(ROOT / "specs" / f"{model}.yaml")
    train = graph.graph["train"]
    plan = plan_training(graph, Target.open(device).profile, train["optimizer"], train)
    families: dict = {}
    for kernel in plan.kernels.values():
        families[kernel.family] = families.get(kernel.family, 0) + 1
    algorithms = {str(k.defines["ALGORITHM"]) for k in plan.kernels.values()
                  if "ALGORITHM" in k.defines} | ({"winograd"} if "winograd" in families else set())
    algorithms = sorted(algorithms or {"direct"})
    return {"families": families, "conv_algorithms": algorithms}


def _device_line(stdout: str) -> str:
    first = stdout.splitlines()[0] if stdout else ""
    return first.split(" on ", 1)[1].split(":", 1)[0] if " on " in first else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(TARGETS))
    parser.add_argument("--device")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--out", default=str(ROOT / "out" / "accuracy"))
    args = parser.parse_args()
    results = []
    print(f"CPU: {cpu_model()['line']}")
    print(f"{'model':<20} {'epochs':>6} {'test acc':>9} {'target':>7} {'met':>4} "
          f"{'minutes':>8} {'images/s':>9}")
    for model in args.models.split(","):
        result = run(model, args.device, Path(args.out))
        result["kernels"] = kernels_used(model, args.device)
        result["cpu"] = cpu_model()["line"]
        results.append(result)
        print(f"{model:<20} {result['epochs']:>6} {result['test_accuracy']:>9.4f} "
              f"{result['target']:>7.3f} {'yes' if result['met'] else 'NO':>4} "
              f"{result['minutes']:>8.1f} {result['median_images_per_s']:>9,.0f}  "
              f"conv: {', '.join(result['kernels']['conv_algorithms'])}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
