"""The benchmark's own arithmetic (benchmarks/bench.py, machine.py): what its tables and target
verdicts are computed from. The default tier checks the summaries on records built here and the
CPU line on this machine's /proc/cpuinfo; the slow tier runs `bench.py --quick --models M1`
end to end (real processes for every peer; needs the [bench] extra)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402
import machine  # noqa: E402

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9R45
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
"""


def test_cpu_model_names_vendor_family_model_and_simd():
    info = machine.cpu_model(CPUINFO)
    assert (info["vendor"], info["family"], info["model"], info["cores"]) == (
        "AuthenticAMD", "26", "2", 2)
    assert info["simd"] == ["avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"]
    assert info["line"].startswith("AuthenticAMD family 26 model 2 (AMD EPYC 9R45), 2 cores")


def test_cpu_model_reads_this_machine():
    info = machine.cpu_model()
    assert info["vendor"] != "?" and info["family"] != "?" and info["cores"] >= 1


def test_clean_environment_drops_only_the_openblas_pins():
    environ = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "PATH": "/bin",
               "OPENBLAS_NUM_THREADS": "2"}
    assert machine.clean_environment(environ) == {"PATH": "/bin", "OPENBLAS_NUM_THREADS": "2"}


def test_ratio_is_of_medians_and_its_spread_round_by_round():
    ours, theirs = [100.0, 300.0, 200.0], [100.0, 100.0, 400.0]
    assert bench.spread(ours) == {"median": 200.0, "min": 100.0, "max": 300.0}
    assert bench.ratio_spread(ours, theirs) == {"median": 2.0, "min": 0.5, "max": 3.0}


def _profile(rows: list[tuple]) -> dict:
    """A profile record as peers.py writes one: (node, channels, phase, of_peak, families)."""
    layers = [{"node": node, "phase": phase, "milliseconds": 1.0, "gflops": 100 * of_peak,
               "of_fma_peak": of_peak, "families": families, "bound": "compute"}
              for node, _, phase, of_peak, families in rows]
    volumes = {node: {"op": "conv", "in": ["8x8x64"], "out": "8x8x64", "channels": channels,
                      "reads_images": False, "flops": 1} for node, channels, *_ in rows}
    volumes["pool"] = {"op": "pool", "in": ["8x8x64"], "out": "4x4x64", "channels": 64,
                       "reads_images": False, "flops": 0}
    layers.append({"node": "pool", "phase": "forward", "milliseconds": 1.0, "gflops": 1.0,
                   "of_fma_peak": 0.01, "families": ["pool"], "bound": "memory"})
    return {"layers": layers, "layer_volumes": volumes, "peak_gflops": 100.0, "batch": 64}


def test_conv_rows_mark_winograd_and_skip_other_ops():
    profile = _profile([("conv1", 3, "forward", 0.4, ["conv"]),
                        ("conv2", 64, "forward", 1.7, ["winograd"]),
                        ("conv2", 64, "backward", 0.85, ["conv", "reduction"])])
    rows = {row["layer"]: row for row in bench.conv_rows(profile)}
    assert set(rows) == {"conv1", "conv2"}
    assert rows["conv2"]["forward"]["winograd"] and not rows["conv2"]["backward"]["winograd"]
    assert "backward" not in rows["conv1"]


def _measurement(model, mode, batch, ratio_torch, ratio_onnx=None):
    ratio = {"torch": {"median": ratio_torch, "min": ratio_torch, "max": ratio_torch}}
    if ratio_onnx is not None:
        ratio["onnxruntime"] = {"median": ratio_onnx, "min": ratio_onnx, "max": ratio_onnx}
    return {"model": model, "mode": mode, "batch": batch, "ratio": ratio}


def test_targets_judge_the_worst_case_and_leave_out_3_channel_and_winograd_rows():
    records = {
        "measurements": [_measurement("M1", "infer", 64, 2.0, 1.3),
                         _measurement("M3", "infer", 256, 1.5, 1.1),
                         _measurement("R18", "infer", 16, 1.1, 1.25),
                         _measurement("R18", "infer", 64, 1.0, 0.5),  # not a target batch
                         _measurement("M2", "train", 64, 1.6),
                         _measurement("M4", "train", 128, 1.55)],
        "profiles": {"M3": _profile([("conv1", 3, "forward", 0.4, ["conv"]),
                                     ("conv2", 32, "forward", 0.95, ["conv"]),
                                     ("conv2", 32, "backward", 0.79, ["conv"]),
                                     ("conv3", 64, "forward", 1.6, ["winograd"])])},
        "compile": {"M1": {"cold_s": 0.8, "warm_s": 0.1}, "R18": {"cold_s": 1.2, "warm_s": 0.1},
                    "V16": {"cold_s": 9.0, "warm_s": 0.5}}}
    verdicts = {row["target"].split(",")[0].split(" >= ")[0].split(" + ")[0]: row
                for row in bench.targets(records)}
    inference = verdicts["inference"]
    assert (inference["worst"], inference["met"]) == (1.1, False)
    assert "R18 b64" not in inference["measured"] and "R18 b16" in inference["measured"]
    assert verdicts["training"]["met"] and verdicts["training"]["worst"] == 1.55
    forward = next(row for row in bench.targets(records) if "forward" in row["target"])
    backward = next(row for row in bench.targets(records) if "backward" in row["target"])
    assert forward["met"] and forward["worst"] == 0.95  # conv1 (3 channels) is left out
    assert not backward["met"] and backward["below"] == ["M3 conv2 79%"]
    assert verdicts["Winograd layers > 150% of the FMA peak (effective)"]["met"]
    assert not verdicts["cold compile"]["met"]  # R18's 1.2 s; VGG-16 is not a target
    assert verdicts["warm compile"]["met"]


@pytest.mark.slow
@pytest.mark.device
def test_quick_benchmark_runs_every_peer_in_its_own_process(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    result = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick",
                           "--models", "M1", "--json", str(result)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CPU: " in done.stdout and "FMA peak" in done.stdout
    records = json.loads(result.read_text())
    assert records["references"]["fma_peak_gflops"] > 0
    assert records["references"]["sgemm_clean_gflops"] > 0
    modes = {(m["mode"], m["batch"]): m for m in records["measurements"]}
    assert set(modes) == {("train", 64), ("infer", 64)}
    infer = modes[("infer", 64)]
    assert set(infer["img_s"]) == {"convgraph", "torch", "onnxruntime"}
    assert all(len(rates) == 2 for rates in infer["per_round_img_s"].values())
    assert infer["max_rel_diff_vs_torch"]["convgraph"] < 1e-4
    assert infer["max_rel_diff_vs_torch"]["onnxruntime"] < 1e-4
    assert all(size > 0 for size in infer["max_rss_bytes"].values())


def test_batches_option_replaces_the_defaults_and_leaves_out_modes_not_named():
    chosen = bench.parse_batches("infer=1,16")
    assert bench.batches("V16", "infer", False, chosen) == (1, 16)
    assert bench.batches("V16", "train", False, chosen) == ()
    assert bench.batches("V16", "train", True) == (16,)
    assert bench.batches("M3", "infer", False) == (64, 256)
    with pytest.raises(SystemExit, match="expected e.g."):
        bench.parse_batches("inference=1")
