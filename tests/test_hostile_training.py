"""Training against a hostile world: two runs in one checkpoint folder, checkpoint headers
tampered with (and their checksum recomputed), weights and gradients gone non-finite, SIGTERM,
SIGHUP and SIGINT at every moment, and --resume into a run whose batches mean something else.

Each case either works exactly or ends with one paragraph on stderr and its documented exit
status: never a traceback, never exit 70, never a lost or overwritten good checkpoint."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from convgraph.cli import main
from convgraph.codegen import launches as buffers
from convgraph.data import Dataset
from convgraph.errors import DataError, OutputError, TrainingDiverged
from convgraph.pipeline import analyse
from convgraph.train.checkpoint import (
    FORMAT_1,
    FolderLock,
    _checksum,
    load_checkpoint,
    save_checkpoint,
)
from convgraph.train.loop import Trainer
from convgraph.train.session import TrainingSession

from .conftest import tiny_images

pytestmark = [pytest.mark.device, pytest.mark.timeout(300)]

SPEC = ('input: 8x8x1\npattern: "[INPUT-CONV(4, 3, pad=1)-RELU-POOL-FC(4)]"\n'
        'train: {epochs: 2, batch: 16, lr: 0.05, seed: 5, dataset: npz}\n')
TINY = {"name": "tiny", "input": "8x8x1", "pattern": "[INPUT-CONV(4, 3, pad=1)-RELU-POOL-FC(4)]",
        "train": {"epochs": 2, "batch": 16, "lr": 0.05, "seed": 5}}


def _write_data(path, count=96):
    x, y = tiny_images(0, count)
    x_test, y_test = tiny_images(1, 32)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    return path


def _quiet_main(*args) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main([str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A spec, its npz data and a checkpoint folder holding last.npz and best.npz of 2 epochs."""
    folder = tmp_path_factory.mktemp("trained")
    spec = folder / "tiny.yaml"
    spec.write_text(SPEC)
    data = _write_data(folder / "d.npz")
    assert _quiet_main("run", spec, "--data", data, "--checkpoint-dir", folder / "ck") == 0
    return spec, data, folder / "ck"


def _arrays(path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _write_tampered(source, target, change_header=None, change_arrays=None, recompute=True):
    """Copy a checkpoint with its header (a dict, or whatever change_header returns) and
    arrays changed, the checksum recomputed as a careful forger would."""
    arrays = _arrays(source)
    header = json.loads(arrays.pop("header").tobytes().decode())
    if change_arrays:
        change_arrays(arrays)
    if change_header:
        header = change_header(header)
    if recompute and isinstance(header, dict):
        header["checksum"] = _checksum(arrays, header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, **arrays)
    return target


def _setting(key, value):
    def change(header):
        if value is _DELETE:
            del header[key]
        else:
            header[key] = value
        return header
    return change


_DELETE = object()


# ---------------------------------------------------------------------------- one run per folder

def _cli_process(spec, data, folder, *extra):
    return [sys.executable, "-m", "convgraph.cli", "run", str(spec), "--data", str(data),
            "--checkpoint-dir", str(folder), *map(str, extra)]


def _wait_for(predicate, seconds=120.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _epoch_saved(last) -> int:
    try:
        return load_checkpoint(last)[2]["epoch"]
    except DataError:
        return 0


def test_a_second_run_in_the_same_folder_is_refused_with_the_holders_pid(tmp_path):
    """Two real processes: the second is refused at once (exit 7, the first's pid), and the
    first is not disturbed -- its saves go on, and SIGTERM then stops it with its state."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    data = _write_data(tmp_path / "d.npz", 1600)
    folder = tmp_path / "ck"
    first = subprocess.Popen(_cli_process(spec, data, folder, "--epochs", "500"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: _epoch_saved(folder / "last.npz") >= 1), "no first epoch"
        started = time.monotonic()
        second = subprocess.run(_cli_process(spec, data, folder, "--epochs", "1"),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 7, second.stderr
        assert f"in use by another run (pid {first.pid}" in second.stderr
        assert "another --checkpoint-dir" in second.stderr and "Traceback" not in second.stderr
        assert time.monotonic() - started < 20  # refused before any work (no training)
        assert first.poll() is None  # the first run is still training
        reached = _epoch_saved(folder / "last.npz")
        assert _wait_for(lambda: _epoch_saved(folder / "last.npz") > reached)
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "--resume" in err and "Traceback" not in err
    load_checkpoint(folder / "last.npz")  # whole
    # the folder is free again once its run has ended, however it ended
    third = subprocess.run(_cli_process(spec, data, folder, "--epochs", "1"),
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr


def test_the_lock_is_per_folder_and_reentrant_in_one_process(tmp_path):
    with FolderLock(tmp_path / "a"), FolderLock(tmp_path / "a"), FolderLock(tmp_path / "b"):
        holder = json.loads((tmp_path / "a" / ".convgraph.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["started"]
    child = subprocess.run(  # released: another process can take it now
        [sys.executable, "-c", "import sys; from convgraph.train.checkpoint import FolderLock;"
         " FolderLock(sys.argv[1]).acquire(); print('ok')", str(tmp_path / "a")],
        capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "ok", child.stderr


@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink"])
def test_a_lock_file_that_is_not_a_file_is_refused(tmp_path, kind, cli):
    folder = tmp_path / "ck"
    folder.mkdir()
    lock = folder / ".convgraph.lock"
    if kind == "fifo":
        os.mkfifo(lock)
    elif kind == "folder":
        lock.mkdir()
    else:
        lock.symlink_to("/dev/zero")
    with pytest.raises(OutputError, match="lock"):
        FolderLock(folder).acquire()
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    status, _, err = cli("run", spec, "--data", _write_data(tmp_path / "d.npz"),
                         "--checkpoint-dir", folder)
    assert status == 7 and ".convgraph.lock" in err and "Traceback" not in err


def test_clean_up_removes_only_temporary_files_of_dead_writers(tmp_path):
    """A save removes what killed saves left, never the temporary file of a live writer (the
    issue: each run deleted the other's save in progress)."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        theirs = tmp_path / f".last.npz.{live.pid}.abc123.tmp"
        leftover = tmp_path / f".last.npz.{dead.pid}.def456.tmp"
        unknown = tmp_path / ".last.npz.oldstyle.tmp"  # no pid: whose it is cannot be told
        for path in (theirs, leftover, unknown):
            path.write_bytes(b"half a save")
        save_checkpoint(tmp_path / "last.npz", {"a.weight": np.ones(3)}, {}, {"epoch": 1})
        assert theirs.exists() and unknown.exists() and not leftover.exists()
    finally:
        live.kill()
        live.wait()
    save_checkpoint(tmp_path / "last.npz", {"a.weight": np.ones(3)}, {}, {"epoch": 2})
    assert not theirs.exists()  # its writer is dead now


# ---------------------------------------------------------------------------- header tampering

TAMPERED = [
    ("negative epoch", _setting("epoch", -1), "'epoch'"),
    ("epoch a string", _setting("epoch", "3"), "'epoch'"),
    ("step a float", _setting("step", 1.5), "'step'"),
    ("batch past the epoch", _setting("batch", 100000), "'batch'"),
    ("batch size zero", _setting("batch_size", 0), "'batch_size'"),
    ("batch size huge", _setting("batch_size", 10**9), "'batch_size'"),
    ("std zero", _setting("std", [0.0]), "'std'"),
    ("std negative", _setting("std", [-0.2]), "'std'"),
    ("std not finite", _setting("std", [float("nan")]), "'std'"),
    ("mean infinite", _setting("mean", [float("inf")]), "'mean'"),
    ("mean a string", _setting("mean", ["0.5"]), "'mean'"),
    ("mean without std", _setting("std", None), "'std'"),
    ("two channels of mean", _setting("mean", [0.1, 0.2]), "'std'"),
    ("seen past the batches", _setting("seen", 10**6), "'seen'"),
    ("correct past seen", _setting("correct", 10**7), "'correct'"),
    ("loss not finite", _setting("loss_sum", float("inf")), "'loss_sum'"),
    ("accuracy above 1", _setting("best_accuracy", 7.0), "'best_accuracy'"),
    ("history a dict", _setting("history", {"a": 1}), "'history'"),
    ("history with a text accuracy", lambda h: {**h, "history": [
        {**r, "test_accuracy": "high"} for r in h["history"]]}, "'history'"),
    ("data a list", _setting("data", [1]), "'data'"),
    ("header a list", lambda header: [header], "not an object"),
    ("header a string", lambda header: "hello", "not an object"),
]


@pytest.mark.parametrize(("case", "change", "field"), TAMPERED, ids=[c[0] for c in TAMPERED])
def test_a_tampered_header_is_refused_naming_the_file_and_field(trained, tmp_path, cli, case,
                                                                change, field):
    spec, data, folder = trained
    target = _write_tampered(folder / "last.npz", tmp_path / "ck" / "last.npz", change)
    with pytest.raises(DataError, match=field):
        load_checkpoint(target)
    status, _, err = cli("run", spec, "--data", data, "--checkpoint-dir", tmp_path / "ck",
                         "--resume")
    assert status == 5, err
    assert str(target) in err and field in err and "Traceback" not in err
    status, _, err = cli("eval", spec, "--data", data, "--weights", target)
    assert status == 5 and field in err and "Traceback" not in err
    assert load_checkpoint(folder / "best.npz")[2]["epoch"] >= 1  # the good one still loads
    assert target.read_bytes()  # a refused checkpoint is left as it was


RESUME_ONLY = [  # fields a weights file may lack, but a resume needs, or needs consistent
    ("missing step", _setting("step", _DELETE), "'step'"),
    ("missing data", _setting("data", _DELETE), "'data'"),
    ("step off the position", _setting("step", 3), "'step'"),
    ("history of another length", _setting("history", []), "'history'"),
    ("another epoch length", _setting("steps_per_epoch", 7), "'batch'"),
]


@pytest.mark.parametrize(("case", "change", "field"), RESUME_ONLY,
                         ids=[c[0] for c in RESUME_ONLY])
def test_a_header_that_cannot_be_resumed_is_refused(trained, tmp_path, cli, case, change, field):
    spec, data, folder = trained
    target = _write_tampered(folder / "last.npz", tmp_path / "ck" / "last.npz", change)
    status, _, err = cli("run", spec, "--data", data, "--checkpoint-dir", tmp_path / "ck",
                         "--resume")
    assert status == 5, err
    assert str(target) in err and field in err and "Traceback" not in err


def _wrong_slot(arrays):
    key = next(k for k in arrays if k.startswith("optim/") and k.endswith("weight/0"))
    arrays[key] = np.zeros((3, 3), np.float32)


def _orphan_slot(arrays):
    arrays["optim/nothing.weight/0"] = np.zeros(3, np.float32)


def _nan_weight(arrays):
    key = next(k for k in arrays if k.startswith("param/") and k.endswith("weight"))
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] = np.nan


def _float64_weight(arrays):
    key = next(k for k in arrays if k.startswith("param/") and k.endswith("weight"))
    arrays[key] = arrays[key].astype(np.float64)


def _missing_slot(arrays):
    key = next(k for k in arrays if k.startswith("optim/"))
    del arrays[key]


ARRAYS = [("optimizer slot of the wrong shape", _wrong_slot, "optimizer slot"),
          ("optimizer slot of no parameter", _orphan_slot, "optimizer slot"),
          ("optimizer slot missing", _missing_slot, "optimizer state"),
          ("NaN weight", _nan_weight, "NaN"),
          ("float64 weight", _float64_weight, "float32")]


@pytest.mark.parametrize(("case", "change", "expected"), ARRAYS, ids=[c[0] for c in ARRAYS])
def test_tampered_arrays_are_refused(trained, tmp_path, cli, case, change, expected):
    spec, data, folder = trained
    target = _write_tampered(folder / "last.npz", tmp_path / "ck" / "last.npz",
                             change_arrays=change)
    status, _, err = cli("run", spec, "--data", data, "--checkpoint-dir", tmp_path / "ck",
                         "--resume")
    assert status == 5, err
    assert str(target) in err and expected in err and "Traceback" not in err


def test_the_header_is_covered_by_the_checksum(trained, tmp_path, cli):
    """A shifted mean (the issue: a loss of 179,354) or a moved position, without the checksum
    recomputed, fails the checksum now; format 1 left the header outside it."""
    spec, data, folder = trained
    for change in (lambda h: {**h, "mean": [h["mean"][0] + 0.3]},
                   lambda h: {**h, "batch": 3, "step": h["step"] + 3}):
        target = _write_tampered(folder / "last.npz", tmp_path / "ck" / "last.npz", change,
                                 recompute=False)
        with pytest.raises(DataError, match="checksum"):
            load_checkpoint(target)
        status, _, err = cli("run", spec, "--data", data, "--checkpoint-dir", tmp_path / "ck",
                             "--resume")
        assert status == 5 and "checksum" in err


def _format_1(source, target):
    """Today's checkpoint as convgraph wrote it before format 2: checksum over the arrays only,
    no batch size, data set or settings in the header."""
    arrays = _arrays(source)
    header = json.loads(arrays.pop("header").tobytes().decode())
    for key in ("batch_size", "steps_per_epoch", "data", "settings"):
        header.pop(key)
    header.update(format=FORMAT_1, checksum=_checksum(arrays))
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, **arrays)
    return target


def test_format_1_checkpoints_still_load_but_cannot_be_resumed(trained, tmp_path, cli):
    spec, data, folder = trained
    old = _format_1(folder / "last.npz", tmp_path / "ck" / "last.npz")
    params, _, header = load_checkpoint(old)
    assert header["epoch"] == 2 and params
    status, out, err = cli("eval", spec, "--data", data, "--weights", old)
    assert status == 0 and "test accuracy" in out, err
    status, _, err = cli("run", spec, "--data", data, "--checkpoint-dir", tmp_path / "ck",
                         "--resume")
    assert status == 5 and "format 1" in err and f"--weights {old}" in err
    status, out, err = cli("run", spec, "--data", data, "--weights", old, "--epochs", "1")
    assert status == 0, err  # its weights start a new run
    bad = _write_tampered(old, tmp_path / "old-bad.npz", _setting("epoch", -4), recompute=False)
    status, _, err = cli("eval", spec, "--data", data, "--weights", bad)
    assert status == 5 and "'epoch'" in err  # validated although outside its checksum


# ---------------------------------------------------------------------------- non-finite state

def _session(**train):
    graph = analyse({**TINY, "train": {**TINY["train"], **train}})
    return TrainingSession(graph, batch=16)


def _poison(session, node, key, where=0):
    name = buffers.param(node, key).name
    values = session.executor.download(name)
    values[where] = np.nan
    session.executor.upload({name: values})


def test_non_finite_gradients_stop_before_the_optimizer_step():
    """One NaN pixel: the ReLU's max turns the activations' NaN into 0, so the loss stays
    finite, but conv1's weight gradient is NaN; the guard stops before applying it."""
    session = _session()
    session.check_every = 1
    x, y = tiny_images(0, 16)
    x = x.astype(np.float32) / 255
    before = session.params
    assert np.isfinite(session.step(x, y, 0.05).loss)
    before = session.params
    x[3, 0, 4, 4] = np.nan
    with pytest.raises(TrainingDiverged, match=r"gradients of layer 'conv1'.*before the "
                                               r"optimizer step") as caught:
        session.step(x, y, 0.05)
    assert "loss stayed finite" in str(caught.value)
    for key, value in session.params.items():  # nothing was applied
        np.testing.assert_array_equal(value, before[key])


def test_non_finite_weights_stop_naming_the_layer_and_never_reach_a_checkpoint(tmp_path):
    session = _session()
    x, y = tiny_images(0, 96)
    trainer = Trainer(session, Dataset("tiny", x, y.astype(np.int64), 4), None,
                      checkpoint_dir=tmp_path / "ck")
    trainer.fit(epochs=1)
    good = (tmp_path / "ck" / "last.npz").read_bytes()
    kept = session.params
    _poison(session, "conv1", "bias")  # the loss stays finite (ReLU), only a check sees it
    with pytest.raises(TrainingDiverged, match=r"weights of layer 'conv1' \(conv1.bias"):
        trainer.fit(epochs=2)  # caught at the epoch's checkpoint (no periodic check is due)
    assert (tmp_path / "ck" / "last.npz").read_bytes() == good  # the good one is untouched
    assert [p.name for p in (tmp_path / "ck").iterdir() if p.suffix == ".tmp"] == []
    restored = session.params  # the session holds the last weights found finite
    assert all(np.isfinite(v).all() for v in restored.values())
    assert restored.keys() == kept.keys()


def test_the_periodic_check_catches_weights_between_checkpoints():
    """Without a checkpoint folder only the periodic check sees weights that went non-finite
    while the loss stayed finite: at the first checked step after it (every 2 here)."""
    session = _session()
    session.check_every = 2
    x, y = tiny_images(0, 96)
    trainer = Trainer(session, Dataset("tiny", x, y.astype(np.int64), 4), None)
    trainer.fit(epochs=1)  # steps 1..6
    _poison(session, "conv1", "bias")
    with pytest.raises(TrainingDiverged, match=r"weights of layer 'conv1' \(conv1.bias: 1 of "
                                               r"4 values\) became NaN or infinite by step 7"):
        trainer.fit(epochs=2)
    assert trainer.progress.step == 6  # the step that found it was not counted


def test_non_finite_weights_end_run_with_exit_6_and_keep_the_checkpoint(trained, tmp_path, cli):
    """Through the command: a NaN pixel in the data makes the gradients NaN while the loss stays
    finite; with the check every step, run stops with exit 6 naming conv1, and the checkpoint
    folder holds the last good state."""
    from convgraph.train import session as session_module

    spec, _, _ = trained
    x, y = tiny_images(0, 96)
    x = x.astype(np.float32) / 255
    x[40, 0, 2, 2] = np.nan  # in the third batch of the first epoch's order, or another
    x_test, y_test = tiny_images(1, 32)
    np.savez(tmp_path / "nan.npz", x=x, y=y, x_test=x_test.astype(np.float32) / 255,
             y_test=y_test)
    old = session_module.CHECK_EVERY
    session_module.CHECK_EVERY = 1
    try:
        status, _, err = cli("run", spec, "--data", tmp_path / "nan.npz", "--set",
                             "normalize=false", "--checkpoint-dir", tmp_path / "ck")
    finally:
        session_module.CHECK_EVERY = old
    if status == 5:  # the data set's own check refused the NaN first: also right
        assert "nan" in err.lower()
        return
    assert status == 6, err
    assert "layer 'conv1'" in err and "Traceback" not in err
    assert not (tmp_path / "ck" / "last.npz").exists()  # nothing non-finite was ever saved


# ---------------------------------------------------------------------------- signals

def _signal_run(tmp_path, data_count=1600, epochs=20):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    data = _write_data(tmp_path / "d.npz", data_count)
    return spec, data


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                                (signal.SIGINT, 130)])
def test_a_signal_during_training_saves_and_resume_gives_the_same_weights(tmp_path, signum,
                                                                          status):
    """SIGTERM, SIGHUP and SIGINT to a real `convgraph run`: it stops at a batch boundary,
    saves last.npz, says how to resume and exits 143 / 129 / 130; --resume then ends with
    bitwise the weights of a run that was never interrupted."""
    spec, data = _signal_run(tmp_path)
    epochs = ["--epochs", "6"]
    straight = subprocess.run(_cli_process(spec, data, tmp_path / "straight", *epochs, "--save",
                                           tmp_path / "straight.npz"),
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    folder = tmp_path / "stopped"
    child, err = _signalled(_cli_process(spec, data, folder, *epochs),
                            lambda pid: _epoch_saved(folder / "last.npz") >= 1, 0.05, signum)
    assert child.returncode == status, err
    name = signal.Signals(signum).name
    assert f"interrupted ({name}); saved the training state to {folder}/last.npz" in err
    assert "--resume" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    header = load_checkpoint(folder / "last.npz")[2]
    assert 1 <= header["epoch"] < 6
    resumed = subprocess.run(_cli_process(spec, data, folder, *epochs, "--resume", "--save",
                                          tmp_path / "resumed.npz"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (f"resumed from {folder}/last.npz: epoch {header['epoch'] + 1} of 6, batch "
            f"{header['batch']} of 100 (step {header['step']})") in " ".join(resumed.stdout.split())
    expected = load_checkpoint(tmp_path / "straight.npz")[0]
    got = load_checkpoint(tmp_path / "resumed.npz")[0]
    for key, value in expected.items():
        np.testing.assert_array_equal(value, got[key])


def _catches_stopping_signals(pid: int) -> bool:
    """Whether the process has handlers for SIGTERM and SIGHUP (its SigCgt mask in /proc): then
    convgraph.cli's first line has run, and its heavy imports are under way."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            caught = next(int(line.split()[1], 16) for line in handle
                          if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return all(caught & (1 << (signum - 1)) for signum in (signal.SIGTERM, signal.SIGHUP))

def _signalled(command, ready, delay: float, signum: int, wait: float = 120.0):
    """Start ``command``, wait (up to ``wait`` s) until ``ready(pid)`` holds, sleep ``delay``,
    send ``signum``; (the finished process, its stderr). The child never outlives the call."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert _wait_for(lambda: ready(child.pid), wait)
        time.sleep(delay)
        child.send_signal(signum)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child, err



# SIGHUP (convgraph/signals.py's one handler, as for the other two) in the slow tier: CI's time
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM,
                                    pytest.param(signal.SIGHUP, marks=pytest.mark.slow)])
def test_a_signal_at_any_moment_gives_one_line_and_its_status(tmp_path, signum):
    """The signal lands during the imports (numpy, networkx: the first ~0.3 s), the compile, the
    data loading, the training, an evaluation or a save: one line on stderr, the signal's
    status, no traceback, and whatever last.npz there is loads. (Before convgraph.cli's first
    line -- the interpreter's own start-up and the light `import convgraph`, some 30 ms --
    the signal meets Python's defaults.)"""
    spec, data = _signal_run(tmp_path, 1600)
    status = 128 + signum
    for delay in (0.0, 0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 1.8):
        folder = tmp_path / f"ck{delay}"
        child, err = _signalled(_cli_process(spec, data, folder, "--epochs", "500"),
                                _catches_stopping_signals, delay, signum, wait=60)
        assert "Traceback" not in err, (delay, err)
        assert child.returncode == status, (delay, child.returncode, err)
        # one line of convgraph's (a signal during a kernel compile can also make PoCL's
        # in-process clang print "1 error generated." first, which convgraph does not own)
        ours = [line for line in err.splitlines() if line.startswith("convgraph:")]
        assert len(ours) == 1 and "interrupted" in ours[0] and err.endswith(ours[0] + "\n"), \
            (delay, err)
        if (folder / "last.npz").exists():
            load_checkpoint(folder / "last.npz")
        assert not list(folder.glob(".*.tmp")), (delay, list(folder.iterdir()))


def test_a_signal_that_python_swallowed_is_raised_at_the_next_step(monkeypatch):
    """A signal whose Interrupt is raised where Python discards exceptions (a __del__, or C
    code that calls back into Python and clears errors) is not lost: the next deferred()
    section -- every training step is one -- raises it. (Lost, it let a 500-epoch run train to
    the end and exit 0, as a CI run saw.)"""
    from convgraph import signals

    unraised = []
    monkeypatch.setattr(sys, "unraisablehook", unraised.append)

    class SignalledWhileDropped:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs here, and Python discards its Interrupt

    with signals.handled(), pytest.raises(signals.Interrupt) as caught:
        SignalledWhileDropped()
        assert [type(u.exc_value) for u in unraised] == [signals.Interrupt]
        with signals.deferred():
            pass
    assert caught.value.exit_status == 143
    with signals.handled():  # taken: a later block does not see it again
        with signals.deferred():
            pass


def test_a_signal_during_a_save_lets_it_complete(tmp_path):
    """SIGTERM while save_checkpoint writes (under the command's handlers): the save
    completes, then the signal is raised; the file is the new one, whole."""
    import threading

    from convgraph import signals

    path = tmp_path / "last.npz"
    save_checkpoint(path, {"a.weight": np.zeros(3, np.float32)}, {}, {"epoch": 1})
    big = {"a.weight": np.arange(8_000_000, dtype=np.float32)}
    timer = threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGTERM))
    with signals.handled(), pytest.raises(signals.Interrupt) as caught:
        timer.start()
        save_checkpoint(path, big, {}, {"epoch": 3})
        timer.join()
        time.sleep(0.5)  # (had it come after the save, it is raised here)
    assert caught.value.exit_status == 143
    params, _, header = load_checkpoint(path)
    assert header["epoch"] == 3 and params["a.weight"][-1] == 7_999_999
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]


def test_a_signal_held_by_a_section_that_fails_is_not_raised_later():
    """A deferred section that ends with an error drops the signal it held (the error ends the
    work): it must not surface as a stray interrupt in a later section of the same process."""
    from convgraph import signals

    with signals.handled(), pytest.raises(ValueError):
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            raise ValueError("a failed step")
    with signals.deferred():  # nothing pending any more
        pass


# ---------------------------------------------------------------------------- resume mismatches

def test_resume_says_what_it_resumes_and_refuses_what_would_be_wrong(trained, tmp_path, cli):
    spec, data, folder = trained
    copy = tmp_path / "ck"
    copy.mkdir()
    (copy / "last.npz").write_bytes((folder / "last.npz").read_bytes())
    common = ("run", spec, "--data", data, "--checkpoint-dir", copy, "--resume")
    status, _, err = cli(*common, "--batch", "8")
    assert status == 2 and "batch size 16, this run's is 8" in err and "--batch 16" in err
    status, _, err = cli(*common, "--limit", "64")
    assert status == 2 and "(96 images)" in err and "--limit" in err
    other = _write_data(tmp_path / "other.npz", 97)
    status, _, err = cli("run", spec, "--data", other, "--checkpoint-dir", copy, "--resume")
    assert status == 2 and "would count other images" in err
    x, y = tiny_images(0, 96)
    (tmp_path / "relabelled").mkdir()  # the same name and size, other labels
    np.savez(tmp_path / "relabelled" / "d.npz", x=x, y=(y + 1) % 4, x_test=x[:8], y_test=y[:8])
    status, _, err = cli("run", spec, "--data", tmp_path / "relabelled" / "d.npz",
                         "--checkpoint-dir", copy, "--resume")
    assert status == 2 and "its labels differ" in err, err
    status, _, err = cli(*common, "--seed", "6")
    assert status == 2 and "--seed 5" in err
    status, _, err = cli(*common, "--optimizer", "adam")
    assert status == 2 and "--optimizer sgd" in err
    assert (copy / "last.npz").read_bytes() == (folder / "last.npz").read_bytes()  # untouched
    status, out, err = cli(*common, "--epochs", "3", "--lr", "0.01")
    assert status == 0, err
    out = " ".join(out.split())  # as the console wrapped it
    assert (f"resumed from {copy}/last.npz: epoch 3 of 3, batch 0 of 6 (step 12); saved with "
            "batch 16, sgd lr 0.05, seed 5, 2 epochs") in out
    assert "this run changes lr 0.05 -> 0.01, epochs 2 -> 3" in out
    assert load_checkpoint(copy / "last.npz")[2]["epoch"] == 3


def test_resume_with_nothing_to_resume_says_so(trained, tmp_path, cli):
    spec, data, _ = trained
    status, out, err = cli("run", spec, "--data", data, "--checkpoint-dir", tmp_path / "empty",
                           "--resume", "--epochs", "1")
    assert status == 0
    assert f"nothing to resume in {tmp_path / 'empty'} (no last.npz): starting from scratch" \
        in err
    assert "resumed" not in out


def test_resume_without_a_checkpoint_folder_is_a_usage_error(trained, cli):
    spec, data, _ = trained
    status, _, err = cli("run", spec, "--data", data, "--resume")
    assert status == 2 and "--resume needs --checkpoint-dir" in err and "Fix:" in err


def test_a_last_npz_that_is_a_fifo_is_refused_at_once(trained, tmp_path, cli):
    spec, data, _ = trained
    (tmp_path / "ck").mkdir()
    os.mkfifo(tmp_path / "ck" / "last.npz")
    status, _, err = cli("run", spec, "--data", data, "--checkpoint-dir", tmp_path / "ck",
                         "--resume")
    assert status == 5 and "FIFO" in err
