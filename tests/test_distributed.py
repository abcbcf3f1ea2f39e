"""Data-parallel training (convgraph/train/distributed.py): real ``mpirun -n 2`` ranks on
loopback, real PoCL devices (two CPU devices in one process through POCL_DEVICES), real files.

Every MPI run is a subprocess under a timeout, so a hang fails the test instead of blocking CI.
The default tier keeps to a few tiny runs (each mpirun start costs about a second plus two
kernel compiles); the sweeps over optimizers and layers are in the slow tier.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from convgraph.errors import DistributedError, UsageError
from convgraph.train.checkpoint import load_checkpoint
from convgraph.train.distributed import launched_rank, local_rank, shard_bounds

from .conftest import tiny_images

ROOT = Path(__file__).resolve().parent.parent
MPIRUN = shutil.which("mpirun")
TIMEOUT = 120  # seconds any one subprocess may take: far above a tiny run's few seconds

try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False

needs_mpi = pytest.mark.skipif(
    MPIRUN is None or not HAVE_MPI4PY,
    reason="needs Open MPI's mpirun and mpi4py (.ci/install-system-packages installs Open MPI, "
           "the dev extra mpi4py)")

PLAIN = "[INPUT-CONV(4, 3, pad=1)-RELU-POOL-DROPOUT(0.3)-FC(4)]"
WITH_BN = "[INPUT-CONV(4, 3, pad=1)-BN-RELU-POOL-DROPOUT(0.3)-FC(4)]"


def write_run(folder: Path, pattern: str = PLAIN, optimizer: str = "sgd", epochs: int = 2,
              images: int = 72, batch: int = 16, name: str = "tiny.yaml") -> Path:
    """A tiny spec training on an npz file of ``images`` 8x8 images, in ``folder``."""
    x, y = tiny_images(0, images, 4)
    x_test, y_test = tiny_images(1, 24, 4)
    np.savez(folder / "tiny.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    spec = folder / name
    spec.write_text(textwrap.dedent(f"""\
        name: tiny
        input: 8x8x1
        pattern: "{pattern}"
        train: {{epochs: {epochs}, batch: {batch}, lr: 0.05, seed: 5, optimizer: {optimizer},
                 dataset: npz, data: {folder / 'tiny.npz'}}}
        """))
    return spec


def environment(**extra) -> dict:
    env = {**os.environ, **extra}
    if os.geteuid() == 0:  # Open MPI refuses root without both of these
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def mpirun_command(ranks: int, *command) -> list[str]:
    # --oversubscribe: more ranks than this machine's cores; --bind-to none: PoCL's threads
    # need every core, not the one a rank would be bound to
    return [MPIRUN, "-n", str(ranks), "--oversubscribe", "--bind-to", "none", *command]


def convgraph(*args) -> list[str]:
    return [sys.executable, "-m", "convgraph.cli", *map(str, args)]


def run(command: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=environment(**env), capture_output=True,
                          text=True, timeout=TIMEOUT)


def weights(path: Path) -> dict:
    """The parameters in a --save file (``param/<name>``) or a script's np.savez, by name."""
    with np.load(path) as data:
        return {key.removeprefix("param/"): data[key] for key in data.files
                if data[key].dtype.kind == "f"}


def assert_close(first: dict, second: dict, tolerance: float = 2e-5) -> None:
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_allclose(first[key], second[key], rtol=tolerance, atol=tolerance,
                                   err_msg=key)


def assert_identical(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


# A script each rank runs through the Python API: fit(distributed=True), then every rank saves
# the weights it holds (rank 0 alone writes checkpoints: these files are the test's own).
FIT_SCRIPT = """
import sys, numpy as np, convgraph
from mpi4py import MPI
spec, out = sys.argv[1], sys.argv[2]
model = convgraph.compile(spec)
model.fit(model.dataset("train"), verbose=0, distributed=True, mpi_timeout=60)
np.savez(f"{out}{MPI.COMM_WORLD.Get_rank()}.npz", **model.params)
"""

# A script that trains in one process on the devices named by argv[3] ('-': the default one)
LOCAL_SCRIPT = """
import sys, numpy as np, convgraph
spec, out, devices = sys.argv[1], sys.argv[2], sys.argv[3]
model = convgraph.compile(spec, device=None if devices == "-" else devices.split(",")[0])
model.fit(model.dataset("train"), verbose=0,
          devices=None if devices == "-" else devices.split(","))
np.savez(out, **model.params)
"""


def fit_on_two_ranks(folder: Path, spec: Path) -> tuple[dict, dict]:
    done = run(mpirun_command(2, sys.executable, "-c", FIT_SCRIPT, str(spec), "rank"), folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return weights(folder / "rank0.npz"), weights(folder / "rank1.npz")


def fit_in_one_process(folder: Path, spec: Path, devices: str = "-", **env) -> dict:
    out = folder / f"local-{devices.replace(',', '-')}.npz"
    done = run([sys.executable, "-c", LOCAL_SCRIPT, str(spec), str(out), devices], folder, **env)
    assert done.returncode == 0, done.stderr[-3000:]
    return weights(out)


# ---------------------------------------------------------------------------- pure Python


def test_shards_partition_every_batch_in_order():
    for count in (1, 2, 7, 16, 17):
        for shards in (1, 2, 3, 4):
            bounds = [shard_bounds(count, shard, shards) for shard in range(shards)]
            assert bounds[0][0] == 0 and bounds[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_the_rank_comes_from_the_launchers_variables(monkeypatch):
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert launched_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert launched_rank() == 3
    for name in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert local_rank() == 1  # picks entry 1 of a --device list


def test_distributed_is_refused_with_predict(cli, tmp_path):
    spec = write_run(tmp_path)
    status, _, err = cli("run", spec, "--distributed", "--predict", tmp_path / "tiny.npz",
                         "--weights", tmp_path / "tiny.npz")
    assert status == UsageError.exit_status and "--distributed" in err


def test_a_device_named_twice_is_refused(cli, tmp_path):
    spec = write_run(tmp_path)
    status, _, err = cli("run", spec, "--device", "0:0,0:0")
    assert status == 4 and "more than once" in err


def test_all_cpus_names_every_cpu_device():
    from convgraph.runtime.devices import device_selectors, list_devices

    cpus = [info.index for info, _ in list_devices() if info.type == "cpu"]
    if not cpus:
        pytest.skip("no OpenCL CPU device here")
    assert device_selectors("all-cpus") == cpus
    assert device_selectors(" 0:0 ") == [" 0:0 "]  # one selector: select_device's as before


def test_fit_refuses_a_devices_string(tmp_path):
    import convgraph

    model = convgraph.compile(write_run(tmp_path))
    with pytest.raises(UsageError, match="list of device selectors"):
        model.fit(model.dataset("train"), verbose=0, devices="0:0")


# ---------------------------------------------------------------------------- MPI ranks


@needs_mpi
def test_two_ranks_train_what_one_process_trains(tmp_path):
    """sgd with dropout, through the CLI: the weights rank 0 saves equal one process's at the
    same global batch, to float32 summation order."""
    spec = write_run(tmp_path)
    one = run(convgraph("run", spec, "--save", "one.npz"), tmp_path)
    assert one.returncode == 0, one.stderr
    two = run(mpirun_command(2, *convgraph("run", spec, "--distributed", "--save", "two.npz",
                                           "--checkpoint-dir", "ck", "--metrics", "m.jsonl")),
              tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_close(weights(tmp_path / "one.npz"), weights(tmp_path / "two.npz"))
    assert two.stdout.count("final test accuracy") == 1  # rank 0 alone prints
    assert "2 ranks x 1 device, 8 images per device" in two.stdout.replace("\n", " ")
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 2  # one writer
    load_checkpoint(tmp_path / "ck" / "last.npz")  # whole and checksummed


@needs_mpi
def test_ranks_end_bit_identical_with_adam(tmp_path):
    spec = write_run(tmp_path, optimizer="adam")
    rank0, rank1 = fit_on_two_ranks(tmp_path, spec)
    assert_identical(rank0, rank1)
    assert_close(rank0, fit_in_one_process(tmp_path, spec))


@needs_mpi
def test_ranks_with_different_specs_refuse_to_start(tmp_path):
    spec = write_run(tmp_path)
    other = write_run(tmp_path, pattern="[INPUT-CONV(5, 3, pad=1)-RELU-POOL-FC(4)]",
                      name="other.yaml")
    command = [MPIRUN, "--oversubscribe", "-n", "1", *convgraph("run", spec, "--distributed"),
               ":", "-n", "1", *convgraph("run", other, "--distributed")]
    done = run(command, tmp_path)
    assert done.returncode == DistributedError.exit_status, done.stderr[-3000:]
    assert "do not train the same model" in done.stderr
    assert "Traceback" not in done.stderr


@needs_mpi
@pytest.mark.slow
def test_ranks_on_different_devices_refuse_to_start(tmp_path):
    """PoCL's pthread and basic drivers are two kinds of CPU device: their kernels could round
    differently, so the ranks must not train one model together."""
    from convgraph.runtime.devices import list_devices

    if not any("portable computing" in info.platform.lower() for info, _ in list_devices()):
        pytest.skip("needs PoCL (its pthread and basic devices)")
    spec = write_run(tmp_path)
    run_it = convgraph("run", spec, "--distributed", "--device", "pocl")
    command = [MPIRUN, "--oversubscribe", "-n", "1", "-x", "POCL_DEVICES=pthread", *run_it,
               ":", "-n", "1", "-x", "POCL_DEVICES=basic", *run_it]
    done = run(command, tmp_path)
    assert done.returncode == DistributedError.exit_status, done.stderr[-3000:]
    assert "rank 1's device is 'basic-" in done.stderr


# A script whose rank 1 nudges one weight after the start-up broadcast: the checksum after the
# first step must catch it
DRIFT_SCRIPT = """
import sys, numpy as np, convgraph
from convgraph.train.distributed import MpiRanks, ShardedSession
from convgraph.train.loop import Trainer
from convgraph.errors import DistributedError
model = convgraph.compile(sys.argv[1])
session = ShardedSession(model.graph, [model.target], model.batch, ranks=MpiRanks(60))
if session.ranks.rank == 1:
    params = session.params
    params["fc1.bias"][0] += 1e-3
    session.set_params(params)
try:
    Trainer(session, model.dataset("train")).fit()
except DistributedError as exc:
    print("refused:", exc.message, flush=True)
    sys.exit(exc.exit_status)
"""


@needs_mpi
def test_weights_that_drift_apart_are_an_error(tmp_path):
    spec = write_run(tmp_path)
    done = run(mpirun_command(2, sys.executable, "-c", DRIFT_SCRIPT, str(spec)), tmp_path)
    assert done.returncode == DistributedError.exit_status, done.stderr[-3000:]
    assert "rank 1 device 0 differ from rank 0's after step 1" in done.stdout


def children_of(parent: int) -> list[int]:
    """The pids whose parent is ``parent``, from /proc (no procps needed)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:  # after the command: state, then the parent's pid
            children.append(int(stat.parent.name))
    return children


def rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of MPI rank ``rank`` among the launcher's descendants (from its environment)."""
    for pid in children_of(launcher.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ:
            return int(pid)
    return None


def kill_rank_after_first_checkpoint(folder: Path, spec: Path) -> subprocess.CompletedProcess:
    """Train on two ranks and SIGKILL rank 1 once rank 0 has written its first checkpoint."""
    command = mpirun_command(2, *convgraph("run", spec, "--distributed", "--checkpoint-dir",
                                           "ck", "--mpi-timeout", "20"))
    launcher = subprocess.Popen(command, cwd=folder, env=environment(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT
    while not (folder / "ck" / "last.npz").exists():
        if launcher.poll() is not None:
            pytest.fail(f"training ended before the first checkpoint: "
                        f"{launcher.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "no checkpoint within the timeout"
        time.sleep(0.01)
    victim = rank_pid(launcher, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    try:
        out, err = launcher.communicate(timeout=TIMEOUT)  # a hang fails here
    except subprocess.TimeoutExpired:
        launcher.kill()
        raise
    return subprocess.CompletedProcess(command, launcher.returncode, out, err)


@needs_mpi
def test_a_killed_rank_stops_the_job_and_a_resume_on_two_ranks_ends_as_an_unbroken_run(
        tmp_path):
    spec = write_run(tmp_path, epochs=3, images=192)
    killed = kill_rank_after_first_checkpoint(tmp_path, spec)
    assert killed.returncode != 0  # mpirun: 137, the dead rank's SIGKILL
    params, _, header = load_checkpoint(tmp_path / "ck" / "last.npz")  # intact
    assert header["epoch"] < 3
    resumed = run(mpirun_command(2, *convgraph("run", spec, "--distributed", "--checkpoint-dir",
                                               "ck", "--resume", "--save", "resumed.npz")),
                  tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from ck/last.npz" in resumed.stdout
    straight = run(mpirun_command(2, *convgraph("run", spec, "--distributed", "--save",
                                                "straight.npz")), tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert_identical(weights(tmp_path / "straight.npz"), weights(tmp_path / "resumed.npz"))


# ---------------------------------------------------------------------------- one process


def test_two_devices_in_one_process_train_what_one_device_trains(tmp_path):
    spec = write_run(tmp_path, optimizer="adam")
    two = run(convgraph("run", spec, "--device", "0:0,0:1", "--save", "two.npz"), tmp_path,
              POCL_DEVICES="pthread pthread")
    if two.returncode == 4 and "no OpenCL device matches '0:1'" in two.stderr:
        pytest.skip("the OpenCL platform here is not PoCL: no second device")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "data-parallel over 2 devices" in two.stdout.replace("\n", " ")
    assert_close(fit_in_one_process(tmp_path, spec), weights(tmp_path / "two.npz"))


# ---------------------------------------------------------------------------- slow sweeps


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("pattern", ["[INPUT-CONV(4, 3, pad=1)-RELU-POOL-FC(4)]", PLAIN],
                         ids=["plain", "dropout"])
def test_two_ranks_equal_one_process_for_every_optimizer(tmp_path, optimizer, pattern):
    spec = write_run(tmp_path, pattern=pattern, optimizer=optimizer, epochs=3, batch=12)
    rank0, rank1 = fit_on_two_ranks(tmp_path, spec)
    assert_identical(rank0, rank1)
    assert_close(rank0, fit_in_one_process(tmp_path, spec))


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batchnorm_two_ranks_equal_two_devices_in_one_process(tmp_path, optimizer):
    """Batchnorm normalises each shard by its own statistics: two ranks train what two devices
    in one process train (the same shards), not one device at the whole batch."""
    spec = write_run(tmp_path, pattern=WITH_BN, optimizer=optimizer, epochs=3)
    rank0, rank1 = fit_on_two_ranks(tmp_path, spec)
    assert_identical(rank0, rank1)
    local = fit_in_one_process(tmp_path, spec, "0:0,0:1", POCL_DEVICES="pthread pthread")
    assert_close(rank0, local)


@needs_mpi
@pytest.mark.slow
def test_a_resume_on_one_rank_ends_as_an_unbroken_one_rank_run(tmp_path):
    spec = write_run(tmp_path, epochs=6, images=480)
    killed = kill_rank_after_first_checkpoint(tmp_path, spec)
    assert killed.returncode != 0
    resumed = run(convgraph("run", spec, "--checkpoint-dir", "ck", "--resume", "--save",
                            "resumed.npz"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = run(convgraph("run", spec, "--save", "straight.npz"), tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert_close(weights(tmp_path / "straight.npz"), weights(tmp_path / "resumed.npz"), 1e-4)


@needs_mpi
@pytest.mark.slow
def test_a_hung_rank_ends_the_job_after_the_mpi_timeout(tmp_path):
    """SIGSTOP leaves the rank alive, which the launcher cannot see: the others' bounded wait
    must end the job (MPI_Abort, exit status 8)."""
    spec = write_run(tmp_path, epochs=6, images=480)
    # 10 s: far above a step of this run, and above the ranks' difference in start-up (each
    # compiles its kernels before the handshake) on a loaded machine
    command = mpirun_command(2, *convgraph("run", spec, "--distributed", "--checkpoint-dir",
                                           "ck", "--mpi-timeout", "10"))
    launcher = subprocess.Popen(command, cwd=tmp_path, env=environment(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not (tmp_path / "ck" / "last.npz").exists():
        if launcher.poll() is not None:
            pytest.fail(f"training ended before the first checkpoint: "
                        f"{launcher.communicate()[1][-3000:]}")
        time.sleep(0.01)
    os.kill(rank_pid(launcher, 1), signal.SIGSTOP)
    try:
        _, err = launcher.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        launcher.kill()
        raise
    assert launcher.returncode == DistributedError.exit_status, err[-3000:]
    assert "waited 10 s for the other ranks" in err
    load_checkpoint(tmp_path / "ck" / "last.npz")


@pytest.mark.slow  # CI's time: the two-rank training tests stay
@needs_mpi
def test_two_ranks_segment_what_one_process_segments(tmp_path):
    """Per-pixel loss: a shard's gradient is the mean over its counted pixels, so shards weigh
    by those (ignored pixels differ from shard to shard), and the epoch's mIoU is global."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 255, (40, 3, 12, 12)).astype(np.uint8)
    masks = (x[:, 0] // 64).astype(np.uint8)  # classes 0..3 from the first channel
    masks[rng.random(masks.shape) < 0.3] = 255  # ignored, unevenly over the images
    np.savez(tmp_path / "seg.npz", x=x, masks=masks, x_test=x[:8], masks_test=masks[:8])
    spec = tmp_path / "seg.yaml"
    spec.write_text((ROOT / "tests" / "specs" / "tiny_segnet.yaml").read_text().replace(
        "dataset: shapes", f"dataset: npz\n  data: {tmp_path / 'seg.npz'}").replace(
        "epochs: 3", "epochs: 2\n  seed: 4"))
    one = run(convgraph("run", spec, "--save", "one.npz", "--metrics", "one.jsonl"), tmp_path)
    assert one.returncode == 0, one.stderr
    two = run(mpirun_command(2, *convgraph("run", spec, "--distributed", "--save", "two.npz",
                                           "--metrics", "two.jsonl")), tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_close(weights(tmp_path / "one.npz"), weights(tmp_path / "two.npz"), 1e-4)
    import json
    records = [[json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
               for name in ("one.jsonl", "two.jsonl")]
    for key in ("train_loss", "train_miou", "test_miou"):
        np.testing.assert_allclose([r[key] for r in records[0]], [r[key] for r in records[1]],
                                   rtol=1e-4, err_msg=key)
