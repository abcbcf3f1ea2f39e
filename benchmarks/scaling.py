"""Data-parallel scaling: images/s at 1 and 2 MPI ranks, the time per step spent averaging the
gradients, the gradient bytes per step, and the ring-allreduce cost model for larger clusters.

    python benchmarks/scaling.py [--models M3,M4] [--ranks 1,2] [--batch 32] [--steps 20]
                                 [--json FILE] [--measure-large]

Each measurement is a real ``mpirun -n R`` job of this script in worker mode: every rank builds
the training plan on its device (``--device``, default convgraph's choice), trains ``--steps``
steps (after two warm-up steps that compile) on a global batch of ``--batch`` random images
split over the ranks, and rank 0 reports the global images/s and, per step, the seconds spent
in MPI collectives (waiting included) and in packing and unpacking the fusion buffer.

Strong scaling (the global batch fixed, each rank trains batch / R): the efficiency is
images/s at R ranks / (R x images/s at 1 rank). On a machine with fewer cores than ranks x the
device's threads this measures contention, not scaling: say so when quoting it.

The cost model then predicts, for M3, M4, ResNet-18 and VGG-16, the efficiency at 8, 64 and 512
ranks under weak scaling (each rank keeps its per-rank batch, so its compute time per step stays
the measured one): a ring allreduce moves 2 (N - 1) / N x G bytes per rank per step (G: the
gradient bytes) and pays 2 (N - 1) latency hops, so

    t_comm(N) = 2 (N - 1) / N x G / bandwidth + 2 (N - 1) x latency
    efficiency(N) = t_compute / (t_compute + t_comm(N))            (no overlap)
                  = t_compute / max(t_compute, t_comm(N))           (perfect overlap)

t_compute is measured at one rank for the measured models; for ResNet-18 and VGG-16 (224x224
ImageNet networks too slow to train here at a useful batch) it is their training FLOPs (3 x
forward) at the FLOP rate M3's training step reaches on this device, unless --measure-large.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"M1": "seed", "M2": "lenet5", "M3": "vgg_cifar", "M4": "resnet8",
          "ResNet-18": "resnet18", "VGG-16": "vgg16"}
CLUSTER_RANKS = (8, 64, 512)
# (name, bytes/s, seconds per hop): the links the model is evaluated over, for ranks that
# compute as this machine does, and for GPU ranks
CPU_LINKS = (("10 GbE", 1.25e9, 30e-6), ("100 Gb/s InfiniBand", 12.5e9, 3e-6))
GPU_LINKS = (("100 Gb/s InfiniBand", 12.5e9, 3e-6), ("NVLink 300 GB/s", 300e9, 2e-6))
# A GPU rank: the training step at a sustained 50 TFLOP/s (float32 on an H100-class GPU, well
# below its peak), and convgraph's reduction staged through the host: the gradients cross PCIe
# (25 GB/s) down and back up every step, which a GPU-aware allreduce (NCCL) would not
GPU_FLOPS, PCIE_BYTES = 50e12, 25e9


# ---------------------------------------------------------------------------- worker (a rank)

def worker(args) -> None:
    """One rank of a measurement: train ``steps`` steps on random data, rank 0 reports."""
    from convgraph.pipeline import analyse
    from convgraph.train.distributed import MpiRanks, ShardedSession

    ranks = MpiRanks(600)
    graph = analyse(ROOT / "specs" / f"{MODELS[args.worker]}.yaml")
    session = ShardedSession(graph, [args.device], args.batch, ranks=ranks, drift_every=0)
    volume = graph.nodes["input"]["output"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, volume.depth, volume.height, volume.width),
                            dtype=np.float32)
    y = rng.integers(0, session.plan.classes, args.batch)
    for _ in range(2):  # the first launches compile (PoCL)
        session.step(x, y, 1e-3)
    waited, packed = ranks.wait_seconds, session.reduce_seconds
    started = time.perf_counter()
    for _ in range(args.steps):
        session.step(x, y, 1e-3)
    seconds = time.perf_counter() - started
    record = {"model": args.worker, "ranks": ranks.size, "batch": args.batch,
              "steps": args.steps, "images_per_s": args.batch * args.steps / seconds,
              "step_seconds": seconds / args.steps,
              "collective_seconds_per_step": (ranks.wait_seconds - waited) / args.steps,
              "pack_seconds_per_step": (session.reduce_seconds - packed) / args.steps,
              "gradient_bytes": 4 * sum(stop - start for kind, _, start, stop in session.pieces
                                        if kind == "grad"),
              "fusion_bytes": 4 * session.pieces[-1][3], "device": session.info.label}
    if ranks.is_root:
        Path(args.out).write_text(json.dumps(record))
    ranks.finish()


# ---------------------------------------------------------------------------- driver

def measure(model: str, ranks: int, args) -> dict:
    out = Path(args.scratch) / f"{model}-{ranks}.json"
    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command = [shutil.which("mpirun") or "mpirun", "-n", str(ranks), "--oversubscribe",
               "--bind-to", "none", sys.executable, __file__, "--worker", model,
               "--batch", str(args.batch), "--steps", str(args.steps), "--out", str(out)]
    if args.device:
        command += ["--device", args.device]
    subprocess.run(command, check=True, env=env, timeout=3600)
    return json.loads(out.read_text())


def training_flops(model: str) -> tuple[int, int]:
    """(trainable parameters, training FLOPs per image: 3 x forward) of a model."""
    from convgraph.pipeline import analyse
    from convgraph.summary import summary_json

    summary = summary_json(analyse(ROOT / "specs" / f"{MODELS[model]}.yaml"))
    return summary["total_params"], 3 * summary["total_flops"]


def efficiency(compute: float, gradient_bytes: float, ranks: int, bandwidth: float,
               latency: float, staging: float = 0.0) -> tuple[float, float]:
    """(no overlap, perfect overlap) efficiency of a ring allreduce over ``ranks``, after
    ``staging`` seconds of copies to and from the host."""
    comm = (2 * (ranks - 1) / ranks * gradient_bytes / bandwidth + 2 * (ranks - 1) * latency
            + staging)
    return compute / (compute + comm), compute / max(compute, comm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="M3,M4")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--measure-large", action="store_true",
                        help="also time ResNet-18 and VGG-16 (at --batch; slow on a CPU)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default="/tmp", help=argparse.SUPPRESS)
    parser.add_argument("--reuse", metavar="FILE.json",
                        help="take the measurements from an earlier --json file")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    models = args.models.split(",")
    if args.measure_large:
        models += [m for m in ("ResNet-18", "VGG-16") if m not in models]
    results = {}
    earlier = {(r["model"], r["ranks"]): r for r in json.loads(Path(args.reuse).read_text())[
        "measured"]} if args.reuse else {}
    for model in models:
        for ranks in map(int, args.ranks.split(",")):
            record = earlier.get((model, ranks)) or measure(model, ranks, args)
            results[(model, ranks)] = record
            one = results.get((model, 1))
            scaling = (record["images_per_s"] / (ranks * one["images_per_s"])
                       if one else float("nan"))
            print(f"{model} {ranks} rank(s), batch {args.batch}: "
                  f"{record['images_per_s']:,.0f} images/s (efficiency {scaling:.2f}); step "
                  f"{1e3 * record['step_seconds']:.1f} ms, collectives "
                  f"{1e3 * record['collective_seconds_per_step']:.2f} ms, pack/unpack "
                  f"{1e3 * record['pack_seconds_per_step']:.2f} ms; gradients "
                  f"{record['gradient_bytes'] / 2**20:.2f} MiB per step", flush=True)
    # the FLOP rate of the measured M3 step (one rank) stands in for the large networks
    reference = results.get(("M3", 1)) or next(r for (m, n), r in results.items() if n == 1)
    _, reference_flops = training_flops(reference["model"])
    rate = reference_flops * reference["images_per_s"]  # FLOP/s of a training step
    print(f"\ncost model (weak scaling, per-rank batch {args.batch}; a training step at "
          f"{rate / 1e9:.1f} GFLOP/s where not measured)")
    model_rows = []
    for model in ("M3", "M4", "ResNet-18", "VGG-16"):
        params, flops = training_flops(model)
        measured = results.get((model, 1))
        compute = measured["step_seconds"] if measured else flops * args.batch / rate
        gradient_bytes = 4 * params
        gpu_compute = flops * args.batch / GPU_FLOPS
        staging = 2 * gradient_bytes / PCIE_BYTES
        row = {"model": model, "gradient_bytes": gradient_bytes, "compute_seconds": compute,
               "measured": bool(measured), "gpu_compute_seconds": gpu_compute,
               "gpu_staging_seconds": staging, "links": {}}
        scenarios = [(f"CPU rank, {link}", compute, bandwidth, latency, 0.0)
                     for link, bandwidth, latency in CPU_LINKS]
        scenarios += [(f"GPU rank, {link}", gpu_compute, bandwidth, latency, staging)
                      for link, bandwidth, latency in GPU_LINKS]
        print(f"  {model}: gradients {gradient_bytes / 2**20:.1f} MiB per step; step "
              f"{compute:.3g} s here{'' if measured else ' (est.)'}, {1e3 * gpu_compute:.3g} ms "
              f"on a GPU + {1e3 * staging:.3g} ms PCIe staging")
        for name, seconds, bandwidth, latency, copies in scenarios:
            values = {str(n): efficiency(seconds, gradient_bytes, n, bandwidth, latency, copies)
                      for n in CLUSTER_RANKS}
            row["links"][name] = values
            text = ", ".join(f"{n}: {values[str(n)][0]:.2f} ({values[str(n)][1]:.2f})"
                             for n in CLUSTER_RANKS)
            print(f"    {name}: {text}")
        model_rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"measured": [dict(r) for r in results.values()], "model": model_rows,
             "flop_rate": rate, "batch": args.batch}, indent=1))


if __name__ == "__main__":
    main()
