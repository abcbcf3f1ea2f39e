"""One benchmark measurement in a process of its own: one peer, one mode, one batch.

    python benchmarks/peers.py PEER MODE SPEC BATCH --result FILE [--device D] [--onnx FILE]
                               [--output FILE.npy] [--seconds S]
    python benchmarks/peers.py export SPEC FILE.onnx      # the PyTorch twin as ONNX, once
    python benchmarks/peers.py profile MODE SPEC BATCH --result FILE [--device D]

PEER is convgraph (PoCL), torch or onnxruntime (2 threads each); MODE is train (forward,
backward, SGD-momentum step) or infer. Each peer runs alone in its process because PyTorch in the
same process as a PoCL run measured up to ~20% slower than alone (REFERENCE.md), which flattered
convgraph; bench.py alternates these processes in rounds. The onnxruntime process never imports
torch or convgraph: it loads the exported file. ``profile`` runs `convgraph run --profile`'s
per-kernel event timing (training step or inference pass) and marks the Winograd layers.

The result file holds the rates of the timed repeats (images/s), the process's max RSS, and for
convgraph the device buffers the plan holds; --output saves the first inference output, so the
parent can check the peers computed the same thing.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

THREADS = 2
LEARNING_RATE = 0.001
SGD_MOMENTUM = {"optimizer": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}


def max_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def batch_input(shape: tuple[int, int, int], batch: int, classes: int) -> tuple:
    """The same images and labels in every peer: (batch, C, H, W) float32, seed 0."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape), dtype=np.float32)
    return x, rng.integers(0, classes, batch)


def time_steps(step, batch: int, seconds: float) -> list[float]:
    """Images/s of repeated timings of ``step`` after a warm-up of at least two calls and
    ``seconds`` (the first launches compile on PoCL; PyTorch's first steps run slow too). Each
    timing runs enough calls to last about ``seconds``; a step longer than two seconds is timed
    twice, a shorter one three times."""
    step()
    warm_until, calls = time.perf_counter() + seconds, 0
    while calls < 1 or time.perf_counter() < warm_until:
        started = time.perf_counter()
        step()
        once, calls = time.perf_counter() - started, calls + 1
    calls = max(1, round(seconds / max(once, 1e-6)))  # from the last warm-up call
    rates = []
    for _ in range(2 if once > 2.0 else 3):
        started = time.perf_counter()
        for _ in range(calls):
            step()
        rates.append(batch * calls / (time.perf_counter() - started))
    return rates


# ---------------------------------------------------------------------------- the graph's view

def _graph_facts(spec: str):
    import convgraph
    from convgraph.params import initial_params

    graph = convgraph.analyse(spec)
    volume = graph.nodes["input"]["output"]
    classes = graph.nodes[graph.graph["output"]]["output"].depth
    return graph, initial_params(graph, "he", 0), (volume.depth, volume.height, volume.width), \
        classes


# ---------------------------------------------------------------------------- the peers

def convgraph_step(mode: str, spec: str, batch: int, args) -> tuple:
    import convgraph

    graph, params, shape, classes = _graph_facts(spec)
    x, y = batch_input(shape, batch, classes)
    if mode == "train":
        from convgraph.train.session import TrainingSession

        # PyTorch's step: SGD with momentum 0.9, no weight decay, whatever the spec trains with
        graph.graph["train"] = {**graph.graph["train"], **SGD_MOMENTUM}
        session = TrainingSession(graph, device=args.device, batch=batch, params=params)
        return (lambda: session.step(x, y, LEARNING_RATE)), None, \
            {"device_bytes": session.device_memory()}
    model = convgraph.compile(graph, device=args.device, batch=batch)
    model.set_params(params)
    return (lambda: model.forward(x)), (lambda: model.forward(x)), \
        {"device_bytes": model.device_memory()}


def _torch_module(spec: str):
    import torch
    from torch_model import GraphModule

    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    graph, params, shape, classes = _graph_facts(spec)
    module = GraphModule(graph)
    module.load_convgraph(params)
    return torch, module, shape, classes


def torch_step(mode: str, spec: str, batch: int, args) -> tuple:
    torch, module, shape, classes = _torch_module(spec)
    x, y = batch_input(shape, batch, classes)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    if mode == "train":
        module.train()
        optimizer = torch.optim.SGD(module.parameters(), lr=LEARNING_RATE, momentum=0.9)
        loss = torch.nn.CrossEntropyLoss()

        def train_step():
            optimizer.zero_grad(set_to_none=True)
            loss(module(tx), ty).backward()
            optimizer.step()

        return train_step, None, {}
    module.eval()

    def infer():
        with torch.no_grad():
            return module(tx).numpy()

    return infer, infer, {}


def onnxruntime_step(mode: str, spec: str, batch: int, args) -> tuple:
    import onnxruntime

    if mode != "infer":
        raise SystemExit("onnxruntime runs inference only")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    if args.passive:  # its threads sleep between operators instead of spinning (see bench.py)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    classes = 1  # labels are unused in inference; the images are those of the other peers
    x, _ = batch_input(tuple(meta.shape[1:]), batch, classes)

    def infer():
        return session.run(None, {meta.name: x})[0]

    return infer, infer, {}


PEERS = {"convgraph": convgraph_step, "torch": torch_step, "onnxruntime": onnxruntime_step}


def export_onnx(spec: str, path: str) -> None:
    """The PyTorch twin (convgraph's weights) as ONNX with a free batch axis."""
    torch, module, shape, _ = _torch_module(spec)
    module.eval()
    example = torch.zeros((1, *shape))
    torch.onnx.export(module, (example,), path, input_names=["x"], dynamo=False,
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


# ---------------------------------------------------------------------------- the profile

def profile(mode: str, spec: str, batch: int, device: str | None, repeats: int) -> dict:
    """`convgraph run --profile`'s per-layer event times, each layer's rows marked with the
    kernel families that ran them (Winograd's rows report direct-conv FLOPs over their time:
    effective GFLOP/s)."""
    import convgraph
    from convgraph.runtime.inspect import profile_inference, profile_training
    from convgraph.train.session import TrainingSession

    graph, params, _, _ = _graph_facts(spec)
    model = convgraph.compile(graph, device=device, batch=batch)
    model.set_params(params)
    if mode == "train":
        session = TrainingSession(model.graph, model.target, batch, params=model.params)
        result = profile_training(session, model, repeats=repeats)
        families = _families(session.plan, training=True)
    else:
        result = profile_inference(model, batch, repeats=repeats)
        families = _families(model.plan, training=False)
    record = result.as_json()
    for row in record["layers"]:
        row["families"] = sorted(families.get((row["phase"], row["node"]), ()))
        row["of_fma_peak"] = row["gflops"] / record["peak_gflops"] if record["peak_gflops"] else 0
    record["layer_volumes"] = {node: _volumes(graph, node) for node in graph}
    return record


def _families(plan, training: bool) -> dict:
    """{(phase, node): {kernel families}} of a plan's launches, phased as the profile phases
    them: a training step's launches up to the loss (the first to read the labels) forward,
    the rest backward, the optimizer's update."""
    from convgraph.codegen.launches import LABELS

    groups = plan.launch_groups()
    phased, phase = [], "forward"
    for launch in groups["train"] if training else plan.launches:
        if training and LABELS in launch.args:
            phase = "backward"
            continue
        phased.append((phase, launch))
    phased += [("update", launch) for launch in groups.get("step", ())] if training else []
    families: dict = {}
    for phase, launch in phased:
        families.setdefault((phase, launch.node), set()).add(plan.kernels[launch.kernel].family)
    return families


def _volumes(graph, node: str) -> dict:
    data = graph.nodes[node]
    sources = [graph.nodes[source]["output"] for source in data["inputs"]]
    return {"op": data["op"], "in": [str(v) for v in sources], "out": str(data["output"]),
            "channels": min([v.depth for v in sources] + [data["output"].depth]),
            "reads_images": any(graph.nodes[s]["op"] == "input" for s in data["inputs"]),
            "flops": int(data.get("flops", 0))}


# ---------------------------------------------------------------------------- the command

def main() -> None:
    if sys.argv[1:2] == ["export"]:
        export_onnx(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=[*PEERS, "profile"])
    parser.add_argument("mode", choices=["train", "infer"])
    parser.add_argument("spec")
    parser.add_argument("batch", type=int)
    parser.add_argument("--result", required=True)
    parser.add_argument("--device")
    parser.add_argument("--onnx")
    parser.add_argument("--output", help="save the first inference output here (.npy)")
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--passive", action="store_true",
                        help="onnxruntime: no spinning threads (PyTorch: OMP_WAIT_POLICY)")
    parser.add_argument("--repeats", type=int, default=5, help="profile: timed passes")
    args = parser.parse_args()
    if args.peer == "profile":
        record = profile(args.mode, args.spec, args.batch, args.device, args.repeats)
        Path(args.result).write_text(json.dumps(record))
        return
    started = time.perf_counter()
    step, infer, extra = PEERS[args.peer](args.mode, args.spec, args.batch, args)
    setup_s = time.perf_counter() - started
    if args.output and infer is not None:
        np.save(args.output, np.asarray(infer()))
    rates = time_steps(step, args.batch, args.seconds)
    Path(args.result).write_text(json.dumps({
        "peer": args.peer, "mode": args.mode, "batch": args.batch, "rates": rates,
        "rate": statistics.median(rates), "setup_s": setup_s, "max_rss_bytes": max_rss_bytes(),
        **extra}))


if __name__ == "__main__":
    main()
