"""Performance benchmark: convgraph on an OpenCL device against PyTorch (2 threads) and
onnxruntime on the CPU, measured side by side in one run.

    pip install -e '.[bench]'           # torch==2.13.0 (a CPU build) and onnxruntime
    python benchmarks/bench.py [--models M1,M2,M3,M4] [--device pocl] [--json FILE] [--quick]
                               [--tune SECONDS | --no-tune]

First each model is tuned on the device (`convgraph tune`, --tune seconds per model, default
120; the device's tuning file is kept, so a second run re-tunes quickly from cached builds);
--no-tune measures the untuned defaults.

Prints, per model: training images/s (forward + backward + SGD-momentum step, steady state) at
batch 64 and 128, inference images/s at batch 64 and 256, each with the ratio to PyTorch (and
to onnxruntime for inference); for M3 and M4 each conv layer's forward and backward GFLOP/s as a
fraction of numpy's sgemm (n = 2048, measured in the same run); compile times, cold (empty
convgraph and PoCL caches) and warm; peak device memory. Medians of repeated timings, the
frameworks alternated, because this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

MODELS = {"M1": "seed", "M2": "lenet5", "M3": "vgg_cifar", "M4": "resnet8"}
THREADS = 2


def median_rate(step, batch: int, repeats: int, inner: int) -> float:
    """Images per second: the median over ``repeats`` timings of ``inner`` calls of ``step``."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(inner):
            step()
        rates.append(batch * inner / (time.perf_counter() - started))
    return statistics.median(rates)


def numpy_sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(times) / 1e9


# ---------------------------------------------------------------------------- the contenders

class ConvgraphTrainer:
    def __init__(self, graph, batch, device):
        from convgraph.train.session import TrainingSession

        self.session = TrainingSession(graph, device=device, batch=batch)
        volume = graph.nodes["input"]["output"]
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((batch, volume.depth, volume.height, volume.width),
                                     dtype=np.float32)
        self.y = rng.integers(0, self.session.plan.classes, batch)

    def __call__(self):
        self.session.step(self.x, self.y, 0.001)


class TorchTrainer:
    def __init__(self, graph, batch, params):
        import torch
        from torch_model import GraphModule

        self.torch = torch
        self.model = GraphModule(graph)
        self.model.load_convgraph(params)
        self.model.train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.001, momentum=0.9)
        volume = graph.nodes["input"]["output"]
        rng = np.random.default_rng(0)
        self.x = torch.from_numpy(rng.standard_normal(
            (batch, volume.depth, volume.height, volume.width), dtype=np.float32))
        classes = graph.nodes[graph.graph["output"]]["output"].depth
        self.y = torch.from_numpy(rng.integers(0, classes, batch))
        self.loss = torch.nn.CrossEntropyLoss()

    def __call__(self):
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.model(self.x), self.y).backward()
        self.optimizer.step()


def training(graph, params, batch, device, repeats) -> dict:
    ours = ConvgraphTrainer(graph, batch, device)
    theirs = TorchTrainer(graph, batch, params)
    inner = max(2, 2048 // batch // 4)
    for run in (ours, theirs):  # warm up: first launches compile on PoCL
        for _ in range(3):
            run()
    ours_rates, theirs_rates = [], []
    for _ in range(repeats):  # alternate, so both see the same machine
        ours_rates.append(median_rate(ours, batch, 1, inner))
        theirs_rates.append(median_rate(theirs, batch, 1, inner))
    result = {"convgraph_img_s": statistics.median(ours_rates),
              "torch_img_s": statistics.median(theirs_rates),
              "memory_bytes": ours.session.device_memory()}
    result["ratio"] = result["convgraph_img_s"] / result["torch_img_s"]
    result["session"] = ours.session
    return result


def inference(graph, params, batch, device, repeats) -> dict:
    import onnxruntime
    import torch
    from torch_model import GraphModule

    import convgraph

    model = convgraph.compile(graph, device=device, batch=batch)
    model.set_params(params)
    volume = graph.nodes["input"]["output"]
    x = np.random.default_rng(0).standard_normal(
        (batch, volume.depth, volume.height, volume.width), dtype=np.float32)
    module = GraphModule(graph).eval()
    module.load_convgraph(params)
    tx = torch.from_numpy(x)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        torch.onnx.export(module, (tx,), str(path), input_names=["x"], dynamo=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module(tx).numpy()
    agreement = float(np.abs(model.forward(x) - expected).max() / np.abs(expected).max())

    def ours():
        model.forward(x)

    def theirs():
        with torch.no_grad():
            module(tx)

    def onnx():
        session.run(None, {"x": x})

    inner = max(2, 4096 // batch // 4)
    for run in (ours, theirs, onnx):
        run()
    rates = {"convgraph": [], "torch": [], "onnx": []}
    for _ in range(repeats):
        rates["convgraph"].append(median_rate(ours, batch, 1, inner))
        rates["torch"].append(median_rate(theirs, batch, 1, inner))
        rates["onnx"].append(median_rate(onnx, batch, 1, inner))
    result = {f"{key}_img_s": statistics.median(value) for key, value in rates.items()}
    result["ratio"] = result["convgraph_img_s"] / result["torch_img_s"]
    result["ratio_onnx"] = result["convgraph_img_s"] / result["onnx_img_s"]
    result["max_rel_diff_vs_torch"] = agreement
    result["memory_bytes"] = model.device_memory()
    return result


def conv_layers(session, batch: int, repeats: int = 5) -> list[dict]:
    """Each conv's forward and backward GFLOP/s from OpenCL event times of a training step."""
    rng = np.random.default_rng(0)
    graph = session.graph
    volume = graph.nodes["input"]["output"]
    x = rng.standard_normal((batch, volume.depth, volume.height, volume.width), dtype=np.float32)
    y = rng.integers(0, session.plan.classes, batch)
    launches = session.plan.groups["train"]
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):
        events: list = []
        session._write_batch(x, y)
        session.executor.enqueue(batch, events, group="train", scalars=session._scalars(0.0))
        session.queue.finish()
        per: dict[tuple[str, str], float] = {}
        for launch, event in zip(launches, events):
            if graph.nodes[launch.node]["op"] != "conv":
                continue
            # the forward pass reads activations; stride-1 input gradients reuse the forward
            # kernel but read gradients
            forward = launch.args[0].kind == "act" and "conv_forward" in launch.kernel
            kind = "forward" if forward else "backward"
            key = (launch.node, kind)
            per[key] = per.get(key, 0.0) + (event.profile.end - event.profile.start) * 1e-9
        for key, seconds in per.items():
            samples.setdefault(key, []).append(seconds)
    rows = []
    for node in [n for n in graph if graph.nodes[n]["op"] == "conv"]:
        flops = graph.nodes[node]["flops"] * batch
        forward = statistics.median(samples[(node, "forward")])
        backward = statistics.median(samples[(node, "backward")])
        data = graph.nodes[node]
        first = graph.nodes[data["inputs"][0]]["output"].depth == graph.nodes[node]["output"].depth
        has_data_grad = graph.nodes[data["inputs"][0]]["op"] != "input"
        rows.append({"layer": node,
                     "shape": f"{graph.nodes[data['inputs'][0]]['output']} -> {data['output']}",
                     "forward_gflops": flops / forward / 1e9,
                     # grad weights always, grad input unless the layer reads the images
                     "backward_gflops": flops * (2 if has_data_grad else 1) / backward / 1e9,
                     "wide": min(graph.nodes[data["inputs"][0]]["output"].depth,
                                 data["output"].depth) >= 32, "same_depth": first})
    return rows


def tune_model(spec: Path, device: str | None, budget: float) -> float:
    """Run `convgraph tune` on one model (its own process); returns the seconds it took."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "convgraph.cli", "tune", str(spec), "--budget", str(budget),
               "--batch", "64", "--json"] + (["--device", device] if device else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"tuning {spec.name} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def compile_times(spec: Path, device: str | None) -> dict:
    """Seconds to compile and run a first batch in a fresh process: cold caches (no program
    binaries, no PoCL kernel cache; the device's tuning file is kept), then warm."""
    code = ("import time, numpy as np, convgraph; t = time.perf_counter(); "
            f"m = convgraph.compile({str(spec)!r}, device={device!r}, batch=64); "
            "v = m.graph.nodes['input']['output']; "
            "m.forward(np.zeros((1, v.depth, v.height, v.width), np.float32)); "
            "print(time.perf_counter() - t)")
    from convgraph.codegen.tuning import tuning_dir

    with tempfile.TemporaryDirectory() as cache:
        if tuning_dir().is_dir():
            shutil.copytree(tuning_dir(), cache + "/convgraph/tuning")
        env = dict(os.environ, CONVGRAPH_CACHE=cache + "/convgraph",
                   POCL_CACHE_DIR=cache + "/pocl")
        run = [sys.executable, "-c", code]
        cold = float(subprocess.run(run, env=env, capture_output=True, text=True,
                                    check=True).stdout.split()[-1])
        warm = float(subprocess.run(run, env=env, capture_output=True, text=True,
                                    check=True).stdout.split()[-1])
    return {"cold_s": cold, "warm_s": warm}


def measure_model(label: str, args, repeats: int) -> dict:
    """Training, inference and conv-layer figures of one model (run in a child process)."""
    import torch

    import convgraph
    from convgraph.params import initial_params

    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    graph = convgraph.analyse(ROOT / "specs" / f"{MODELS[label]}.yaml")
    params = initial_params(graph, "he", 0)
    record: dict = {"training": [], "inference": [], "conv_layers": []}
    for batch in (64,) if args.quick else (64, 128):
        result = training(graph, params, batch, args.device, repeats)
        session = result.pop("session")
        if batch == 64 and label in ("M3", "M4"):  # while this session is the live one
            record["conv_layers"] = conv_layers(session, 64)
        del session
        record["training"].append({"model": label, "batch": batch, **result})
    for batch in (64,) if args.quick else (64, 256):
        result = inference(graph, params, batch, args.device, repeats)
        record["inference"].append({"model": label, "batch": batch, **result})
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch 64 only, fewer repeats")
    parser.add_argument("--tune", type=float, default=120.0, metavar="SECONDS",
                        help="tune each model on the device first, in this many seconds")
    parser.add_argument("--no-tune", action="store_true", help="measure the untuned defaults")
    parser.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    faulthandler.enable()
    repeats = 3 if args.quick else args.repeats
    if args.child:  # one model in its own process: a clean device and allocator for each
        Path(args.child).write_text(json.dumps(measure_model(args.models, args, repeats),
                                               default=float))
        return

    import torch

    from convgraph.runtime.devices import select_device
    from convgraph.summary import mib

    sgemm = numpy_sgemm_gflops()
    info = select_device(args.device)[0]
    print(f"device: {info.label}; PyTorch {torch.__version__} and onnxruntime with {THREADS} "
          f"threads; numpy sgemm (n=2048) {sgemm:.0f} GFLOP/s\n")
    records: dict = {"device": info.label, "sgemm_gflops": sgemm, "training": [],
                     "inference": [], "conv_layers": {}, "compile": {}, "tuning_s": {}}
    if not args.no_tune:
        for label in args.models.split(","):
            spec = ROOT / "specs" / f"{MODELS[label]}.yaml"
            records["tuning_s"][label] = tune_model(spec, args.device, args.tune)
        print("tuned (convgraph tune, seconds): " + ", ".join(
            f"{label} {seconds:.0f}" for label, seconds in records["tuning_s"].items()) + "\n")
    print(f"{'model':<5} {'mode':<9} {'batch':>5} {'convgraph':>10} {'torch':>9} {'ratio':>6} "
          f"{'onnxrt':>9} {'ratio':>6} {'memory':>10}")
    for label in args.models.split(","):
        with tempfile.TemporaryDirectory() as folder:
            result_file = Path(folder) / "result.json"
            command = [sys.executable, __file__, "--models", label, "--child", str(result_file),
                       "--repeats", str(args.repeats)] + (["--quick"] if args.quick else []) + (
                       ["--device", args.device] if args.device else [])
            done = subprocess.run(command, capture_output=True, text=True)
            if not result_file.exists():
                raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
            record = json.loads(result_file.read_text())
        for result in record["training"]:
            records["training"].append(result)
            print(f"{label:<5} {'train':<9} {result['batch']:>5} "
                  f"{result['convgraph_img_s']:>10,.0f} {result['torch_img_s']:>9,.0f} "
                  f"{result['ratio']:>6.2f} {'':>9} {'':>6} "
                  f"{mib(result['memory_bytes']):>10}", flush=True)
        for result in record["inference"]:
            records["inference"].append(result)
            print(f"{label:<5} {'inference':<9} {result['batch']:>5} "
                  f"{result['convgraph_img_s']:>10,.0f} {result['torch_img_s']:>9,.0f} "
                  f"{result['ratio']:>6.2f} {result['onnx_img_s']:>9,.0f} "
                  f"{result['ratio_onnx']:>6.2f} {mib(result['memory_bytes']):>10}", flush=True)
        if record["conv_layers"]:
            records["conv_layers"][label] = record["conv_layers"]
        records["compile"][label] = compile_times(ROOT / "specs" / f"{MODELS[label]}.yaml",
                                                  args.device)
    for label, rows in records["conv_layers"].items():
        print(f"\n{label} conv layers, batch 64 (GFLOP/s and fraction of sgemm {sgemm:.0f}):")
        print(f"  {'layer':<14} {'volumes':<24} {'forward':>8} {'of sgemm':>8} {'backward':>9} "
              f"{'of sgemm':>8}")
        for row in rows:
            print(f"  {row['layer']:<14} {row['shape']:<24} {row['forward_gflops']:>8.1f} "
                  f"{row['forward_gflops'] / sgemm:>8.0%} {row['backward_gflops']:>9.1f} "
                  f"{row['backward_gflops'] / sgemm:>8.0%}")
    print("\ncompile (compile + first batch in a fresh process):")
    for label, times in records["compile"].items():
        print(f"  {label}: cold {times['cold_s']:.2f} s, warm {times['warm_s']:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
