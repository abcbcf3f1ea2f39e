"""The machine a benchmark runs on, and the references measured in the same run.

The processor changes between sessions on these shared machines, so every table prints the CPU
(vendor, family, model, SIMD flags) and the load, and judges kernels against references measured
beside them, each in a process of its own:

- the device's fp32 FMA peak and copy bandwidth as `convgraph run --profile` measures them
  (kernels/peak.cl);
- numpy's sgemm with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for that process alone: as
  the environment sets them they select an AVX2 kernel (266 instead of 477 GFLOP/s on a Zen 5,
  ../shared/REFERENCE.md), which made layers look faster than "sgemm". The figure with the
  environment as it is is kept beside it, for the record.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# the variables that pin OpenBLAS to a kernel: unset only for the clean sgemm's own process
OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

# flags worth naming in a one-line summary (the rest of /proc/cpuinfo's list is noise here)
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_model(cpuinfo: str | None = None) -> dict:
    """Vendor, family, model, name and SIMD flags of the first processor in /proc/cpuinfo.

    >>> cpu_model("vendor_id : AuthenticAMD\\ncpu family : 26\\nmodel : 2\\nflags : fma\\n")["line"]
    'AuthenticAMD family 26 model 2 (?), 1 cores; fma'
    """
    if cpuinfo is None:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    first, cores = {}, 0
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            cores += 1
        if key and key not in first:
            first[key] = value
    cores = cores or 1
    flags = set(first.get("flags", "").split())
    simd = [flag for flag in SIMD_FLAGS if flag in flags]
    info = {"vendor": first.get("vendor_id", "?"), "family": first.get("cpu family", "?"),
            "model": first.get("model", "?"), "name": first.get("model name", "?"),
            "cores": cores, "simd": simd}
    info["line"] = (f"{info['vendor']} family {info['family']} model {info['model']} "
                    f"({info['name']}), {cores} cores; {' '.join(simd) or 'no AVX'}")
    return info


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared: say how loaded it was)."""
    return [round(value, 2) for value in os.getloadavg()]


def clean_environment(environ: dict | None = None) -> dict:
    """``environ`` (default os.environ) without the OpenBLAS kernel pins."""
    return {key: value for key, value in (environ or os.environ).items()
            if key not in OPENBLAS_PINS}


_SGEMM = """
import statistics, time, numpy as np
n, repeats = {n}, {repeats}
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
times = []
for _ in range(repeats):
    started = time.perf_counter(); a @ b; times.append(time.perf_counter() - started)
print(2 * n ** 3 / statistics.median(times) / 1e9)
"""


def sgemm_gflops(n: int = 2048, repeats: int = 5, clean: bool = True) -> float:
    """numpy's sgemm (median of ``repeats``) in its own process; ``clean``: with the OpenBLAS
    pins unset for that process alone."""
    env = clean_environment() if clean else dict(os.environ)
    done = subprocess.run([sys.executable, "-c", _SGEMM.format(n=n, repeats=repeats)], env=env,
                          capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def device_peak(device: str | None = None) -> dict:
    """The device's fp32 FMA peak (GFLOP/s) and copy bandwidth (GB/s), as `convgraph run
    --profile` measures them, in its own process (it profiles the small seed network and
    reports the peaks measured beside it)."""
    command = [sys.executable, "-m", "convgraph.cli", "run", str(ROOT / "specs" / "seed.yaml"),
               "--profile", "--json"] + (["--device", device] if device else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"measuring the device peak failed:\n{done.stderr[-2000:]}")
    profile = json.loads(done.stdout)
    return {"fma_gflops": profile["peak_gflops"], "copy_gbytes": profile["peak_gbytes"],
            "device": profile["device"]}


def references(device: str | None, quick: bool = False) -> dict:
    """The run's yardsticks, each measured in its own process, and the load while they ran."""
    n = 1024 if quick else 2048
    peak = device_peak(device)
    return {"fma_peak_gflops": peak["fma_gflops"], "copy_gbytes": peak["copy_gbytes"],
            "device": peak["device"], "sgemm_n": n,
            "sgemm_clean_gflops": sgemm_gflops(n, clean=True),
            "sgemm_as_set_gflops": sgemm_gflops(n, clean=False),
            "openblas_pins": {key: os.environ.get(key) for key in OPENBLAS_PINS},
            "load_average": load_average()}


def timing_parser(doc: str, batch: int = 64, rounds: int = 5,
                  repeats: int = 5) -> argparse.ArgumentParser:
    """The command line of a benchmark that times kernel sites in alternating rounds (the first
    line of ``doc`` describes it): --batch, --rounds, --repeats and --json, to which it adds its
    own arguments.

    >>> timing_parser("Times.").parse_args(["--rounds", "3"]).rounds
    3
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--rounds", type=int, default=rounds,
                        help="alternating rounds (the tables give their median and spread)")
    parser.add_argument("--repeats", type=int, default=repeats, help="runs per round (median)")
    parser.add_argument("--json", help="write the figures here")
    return parser


def probe_event_ms(executor, tuner) -> float:
    """Median over ``tuner.repeats`` runs of the kernel event time (ms) of ``executor``'s probe
    launches at ``tuner.batch`` (a tuning probe's executor: runtime/tune.py)."""
    import statistics

    samples = []
    for _ in range(tuner.repeats):
        events: list = []
        executor.enqueue(tuner.batch, events, group="probe")
        tuner.queue.finish()
        samples.append(sum(e.profile.end - e.profile.start for e in events) * 1e-6)
    return statistics.median(samples)
