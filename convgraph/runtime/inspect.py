"""Timing a compiled model on its device: `convgraph run --profile`.

profile_model times every launch with OpenCL events and sets it against the device's measured
peak FLOP rate and bandwidth (two small kernels of kernels/peak.cl, built like every program).
(The kernel checks of `--verify` are in convgraph/verify.py, above training.)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from convgraph.codegen.plan import KernelSpec
from convgraph.graph import ordered
from convgraph.runtime.target import build

# ---------------------------------------------------------------------------- profiling

@dataclass
class Timing:
    node: str
    op: str
    milliseconds: float
    gflops: float
    gbytes: float
    peak_fraction: float


class _PeakPlan:
    """The two peak kernels as a plan to build (run by hand below: their arguments are not a
    network's buffers)."""

    def __init__(self, rounds: int):
        self.kernels = {spec.name: spec for spec in (
            KernelSpec("convgraph_peak_fma", "peak", "PEAK_FMA", {"ROUNDS": rounds}),
            KernelSpec("convgraph_peak_copy", "peak", "PEAK_COPY", {}))}

    def launch_groups(self) -> dict:
        return {}


def _peak(model) -> tuple[float, float]:
    """The device's measured fp32 FMA rate (GFLOP/s) and copy bandwidth (GB/s)."""
    import pyopencl as cl

    rounds = 256
    # no build options, as these were always measured (fma is explicit in the kernel)
    program = build(_PeakPlan(rounds), model.target, "peak FLOP rate and bandwidth",
                    options=()).program
    items = 64 * model.info.compute_units * 16
    out = cl.Buffer(model.context, cl.mem_flags.WRITE_ONLY, 4 * items)
    kernel = program.convgraph_peak_fma
    kernel.set_args(out, np.float32(0.5))
    floats = 1 << 24
    src = cl.Buffer(model.context, cl.mem_flags.READ_WRITE, 4 * floats)
    dst = cl.Buffer(model.context, cl.mem_flags.READ_WRITE, 4 * floats)
    cl.enqueue_fill_buffer(model.queue, src, np.float32(1), 0, 4 * floats)
    copier = program.convgraph_peak_copy
    copier.set_args(src, dst)
    best_flops = best_bytes = 0.0
    for _ in range(5):
        event = cl.enqueue_nd_range_kernel(model.queue, kernel, (items,), None)
        event.wait()
        seconds = (event.profile.end - event.profile.start) * 1e-9
        best_flops = max(best_flops, items * 16 * 8 * 2 * rounds / seconds / 1e9)
        event = cl.enqueue_nd_range_kernel(model.queue, copier, (floats // 4,), None)
        event.wait()
        seconds = (event.profile.end - event.profile.start) * 1e-9
        best_bytes = max(best_bytes, 2 * 4 * floats / seconds / 1e9)
    return best_flops, best_bytes


def profile_model(model, batch: int | None = None, repeats: int = 10
                  ) -> tuple[list[Timing], float, float, float]:
    """Per-layer median times over ``repeats`` forward passes (after a warm-up).

    Returns (timings, total milliseconds, peak GFLOP/s, peak GB/s)."""
    batch = batch or model.batch
    volume = model.graph.nodes[ordered(model.graph)[0]]["output"]
    x = np.random.default_rng(0).normal(
        size=(batch, volume.depth, volume.height, volume.width)).astype(np.float32)
    model.forward(x)  # warm-up: first launches compile on some drivers
    samples: dict[str, list[float]] = {}
    for _ in range(repeats):
        events: list = []
        model.executor.allocate(model.batch)
        model.executor.write_input(model.plan.layouts[model.plan.input].pack(x))
        model.executor.enqueue(batch, events)
        model.queue.finish()
        per_node: dict[str, float] = {}
        for launch, event in zip(model.plan.launches, events):
            per_node[launch.node] = per_node.get(launch.node, 0.0) + (
                event.profile.end - event.profile.start) * 1e-6
        for node, ms in per_node.items():
            samples.setdefault(node, []).append(ms)
    peak_flops, peak_bytes = _peak(model)
    flops: dict[str, int] = {}
    moved: dict[str, int] = {}
    for launch in model.plan.launches:
        flops[launch.node] = flops.get(launch.node, 0) + launch.flops * batch
        moved[launch.node] = moved.get(launch.node, 0) + launch.bytes * batch
    timings = []
    for node, values in samples.items():
        ms = statistics.median(values)
        gflops = flops[node] / ms / 1e6 if ms else 0.0
        gbytes = moved[node] / ms / 1e6 if ms else 0.0
        fraction = max(gflops / peak_flops if peak_flops else 0.0,
                       gbytes / peak_bytes if peak_bytes else 0.0)
        data = model.graph.nodes[node]
        op = data["op"] + (f"+{model.graph.nodes[data['epilogue']]['op']}"
                           if data.get("epilogue") else "")
        timings.append(Timing(node, op, ms, gflops, gbytes, fraction))
    total = sum(t.milliseconds for t in timings)
    return timings, total, peak_flops, peak_bytes
