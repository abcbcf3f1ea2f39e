"""Generated kernels under Oclgrind, the OpenCL device simulator that finds out-of-bounds
accesses, reads of uninitialised memory and data races.

Oclgrind is registered as the only OpenCL platform of a child process (OCL_ICD_VENDORS), which
checks every forward and backward kernel of a few small networks against numpy; Oclgrind exits
0 whatever it finds, so the test asserts that its log is empty. The default run takes a quick
subset; the full sweep runs the whole kernel harness under Oclgrind, on a simulated small device:

    OCLGRIND_SWEEP=1 python -m pytest -m slow tests/test_oclgrind.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ICD = Path("/usr/lib/oclgrind/liboclgrind-rt-icd.so")
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not ICD.exists(), reason="oclgrind is not installed "
                                "(apt-get install oclgrind)")

NETWORKS = [
    {"input": "7x5x3", "pattern": "[INPUT-CONV(5, 3, pad=1)-RELU-POOL(2, rounding=floor)-FC(4)]"},
    {"input": "6x6x4", "pattern": "[INPUT-CONV(4, 3, stride=2, pad=same, groups=2, bias=false)"
                                  "-BN-RELU-CONV(8, 1)-AVGPOOL(3, 2, pad=1, rounding=ceil)"
                                  "-DROPOUT(0.3)-FLATTEN-FC(3)-SOFTMAX]"},
    {"input": "5x5x2", "nodes": {
        "a": {"op": "conv", "filters": 3, "size": 3, "pad": 1, "inputs": ["input"]},
        "b": {"op": "conv", "filters": 3, "size": 1, "inputs": ["input"]},
        "s": {"op": "add", "inputs": ["a", "b"]},
        "c": {"op": "concat", "inputs": ["s", "input"]},
        "t": "tanh", "g": "gap", "o": {"op": "fc", "units": 2}}},
]

CHILD = """
import json, sys
import convgraph
from convgraph.runtime.inspect import verify_model, verify_training
failed = 0
for spec in json.loads(sys.argv[1]):
    model = convgraph.compile(spec, batch=2, share_buffers=False)
    assert "Oclgrind" in model.info.platform, model.info.label
    checks = verify_model(model) + verify_training(model.graph, batch=2)
    for check in checks:
        if not check.passed:
            failed += 1
            print("FAILED", check.node, check.op, check.error)
    print(len(checks), "kernel checks on", model.info.label)
sys.exit(1 if failed else 0)
"""


def run_under_oclgrind(tmp_path, argv, extra_env=None, timeout=600):
    vendors = tmp_path / "vendors"
    vendors.mkdir(exist_ok=True)
    (vendors / "oclgrind.icd").write_text(f"{ICD}\n")
    log = tmp_path / "oclgrind.log"
    env = dict(os.environ, OCL_ICD_VENDORS=str(vendors), OCLGRIND_LOG=str(log),
               OCLGRIND_DATA_RACES="1", OCLGRIND_UNINITIALIZED="1",
               CONVGRAPH_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT),
               **(extra_env or {}))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    return done, (log.read_text() if log.exists() else "")


def test_kernels_are_clean_under_oclgrind(tmp_path):
    import json

    done, log = run_under_oclgrind(tmp_path, [sys.executable, "-c", CHILD, json.dumps(NETWORKS)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("kernel checks on") == len(NETWORKS)
    assert log.strip() == "", log[:4000]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("OCLGRIND_SWEEP"), reason="set OCLGRIND_SWEEP=1")
def test_the_whole_kernel_harness_under_oclgrind_on_a_small_device(tmp_path):
    done, log = run_under_oclgrind(
        tmp_path, [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                   "tests/test_kernels.py", "-k", "not imagenet and not vgg16 and not resnet18"],
        {"OCLGRIND_MAX_WGSIZE": "64", "OCLGRIND_LOCAL_MEM_SIZE": "16384"}, timeout=6 * 3600)
    assert done.returncode == 0, done.stdout[-4000:]
    assert log.strip() == "", log[:4000]
