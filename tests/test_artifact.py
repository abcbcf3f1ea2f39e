"""A model on disk: ``model.save`` / ``convgraph.load`` (one .npz, or a compiled artifact folder),
and ``compile -o DIR [--weights W]`` / ``run DIR`` / ``eval DIR``.

Round trips give bitwise the same predictions; every file of an artifact is checked against its
manifest before use (a damaged one is refused with exit status 5 by the real command line); the
stored kernels are what runs on the device they were compiled for, and another device or version
re-plans and rebuilds with a note; an artifact is replaced only by a whole new one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convgraph
from convgraph.artifact import (
    MANIFEST,
    plan_from_record,
    plan_record,
    read_artifact,
    sign,
)
from convgraph.codegen.source import program_source
from convgraph.data import Dataset
from convgraph.train.checkpoint import load_checkpoint

from .conftest import SPECS, tiny_images

pytestmark = [pytest.mark.device, pytest.mark.timeout(300)]

SPEC = """\
name: tiny
input: 8x8x1
pattern: "[INPUT-CONV(4, 3, pad=1)-BN-RELU-POOL-FC(4)]"
train: {epochs: 2, batch: 16, lr: 0.05, seed: 3, dataset: npz, data: DATA}
"""
NAMES = ["top-left", "top-right", "bottom-left", "bottom-right"]


def convgraph_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """The real `convgraph` command, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "convgraph.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=240, cwd=cwd)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A spec, its npz data set, an input batch, and the weights trained by `convgraph run
    --save` with a checkpoint folder (in-process)."""
    from convgraph.cli import main

    folder = tmp_path_factory.mktemp("artifact")
    x, y = tiny_images(0, 96)
    x_test, y_test = tiny_images(1, 32)
    np.savez(folder / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    np.save(folder / "x.npy", x_test[:5])
    spec = folder / "tiny.yaml"
    spec.write_text(SPEC.replace("DATA", str(folder / "d.npz")))
    assert main(["run", str(spec), "--save", str(folder / "w.npz"),
                 "--checkpoint-dir", str(folder / "ck")]) == 0
    return folder, spec


def trained_model(made) -> convgraph.Model:
    """The spec trained in Python on a Dataset that names its classes."""
    _, spec = made
    model = convgraph.compile(spec)
    data = model.dataset("train")
    named = Dataset("named", data.x, data.y, data.classes, NAMES)
    model.fit(named, epochs=1)
    return model


def resign(folder: Path, **changes) -> None:
    """Edit manifest fields and sign it again (what a careful forger, or a test, does)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest.update(changes)
    (folder / MANIFEST).write_text(json.dumps(sign(manifest)))


# ---------------------------------------------------------------------------- one file

def test_save_npz_then_load_rebuilds_the_model(made, tmp_path):
    """The file alone is the model: network, weights, normalisation, class names."""
    folder, _ = made
    model = trained_model(made)
    assert model.class_names == NAMES
    model.save(tmp_path / "m.npz")
    loaded = convgraph.load(tmp_path / "m.npz")
    assert loaded.graph.graph["name"] == "tiny" and loaded.class_names == NAMES
    for saved, kept in zip(model.normalization, loaded.normalization):
        np.testing.assert_array_equal(saved, kept)
    x = np.load(folder / "x.npy")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_cli_save_loads_in_python_with_the_accuracy_eval_prints(made, cli):
    """`run --save W.npz`, then ``convgraph.load(W).evaluate`` gives exactly what `eval`
    prints for the same weights (the normalisation came along: not 0.836 against 0.855)."""
    folder, spec = made
    status, out, err = cli("eval", spec, "--weights", folder / "w.npz")
    assert status == 0, err
    model = convgraph.load(folder / "w.npz")
    result = model.evaluate(model.dataset("test"))
    assert model.normalization is not None
    right = int((result.predictions == result.labels).sum())
    assert (f"test loss {result.loss:.4f}, test accuracy {result.accuracy:.4f} "
            f"({right:,} of {len(result.labels):,})") in out


def test_load_a_checkpoint_of_a_training_folder(made):
    folder, _ = made
    for name in ("last.npz", "best.npz"):
        model = convgraph.load(folder / "ck" / name)
        params, _, _ = load_checkpoint(folder / "ck" / name)
        for key, value in params.items():
            np.testing.assert_array_equal(model.params[key], value, err_msg=key)


def test_a_file_without_a_spec_says_to_give_the_spec(made, tmp_path):
    folder, spec = made
    plain = tmp_path / "plain.npz"
    np.savez(plain, **convgraph.compile(spec).params)
    with pytest.raises(convgraph.DataError, match="no spec") as caught:
        convgraph.load(plain)
    assert "convgraph.compile(SPEC)" in str(caught.value)
    assert "load_weights" in str(caught.value)


# ---------------------------------------------------------------------------- the artifact

def test_a_checkpoint_header_without_a_spec_says_to_give_the_spec(made, tmp_path):
    """A file of an older convgraph: a checkpoint header, but no spec in it."""
    from convgraph.train.checkpoint import save_checkpoint

    _, spec = made
    older = tmp_path / "older.npz"
    save_checkpoint(older, convgraph.compile(spec).params, {}, {"spec": "tiny", "history": []})
    with pytest.raises(convgraph.DataError, match="holds weights but no spec"):
        convgraph.load(older)


def test_model_save_folder_then_load_predicts_bitwise_equal(made, tmp_path):
    folder, _ = made
    model = trained_model(made)
    model.save(tmp_path / "art")
    names = set(os.listdir(tmp_path / "art"))
    assert names == {"spec.yaml", "graph.json", "kernels.cl", "plan.json", "plan.txt",
                     "summary.txt", "weights.npz", MANIFEST}
    loaded = convgraph.load(tmp_path / "art")
    assert loaded.class_names == NAMES and loaded.batch == model.batch
    x = np.load(folder / "x.npy")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.source == (tmp_path / "art" / "kernels.cl").read_text()


def test_cli_compile_with_weights_then_python_load(made, tmp_path):
    folder, spec = made
    done = convgraph_cli("compile", spec, "-o", tmp_path / "art", "--weights", folder / "w.npz")
    assert done.returncode == 0, done.stderr
    loaded = convgraph.load(tmp_path / "art")
    reference = convgraph.compile(spec)
    reference.load_weights(folder / "w.npz")
    x = np.load(folder / "x.npy")
    np.testing.assert_array_equal(loaded.predict(x), reference.predict(x))


def test_python_save_then_cli_run_and_eval_use_the_artifact(made, tmp_path):
    """`run DIR --predict` needs no --weights (nor --random-weights) when DIR holds them, and
    `eval DIR` evaluates them."""
    folder, _ = made
    model = trained_model(made)
    model.save(tmp_path / "art")
    done = convgraph_cli("run", tmp_path / "art", "--predict", folder / "x.npy", "--output",
                         tmp_path / "s.npy")
    assert done.returncode == 0, done.stderr
    assert "note:" not in done.stderr  # the stored kernels, as they are
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"),
                                  model.predict(np.load(folder / "x.npy")))
    done = convgraph_cli("eval", tmp_path / "art")
    assert done.returncode == 0, done.stderr
    result = model.evaluate(model.dataset("test"))
    assert f"test accuracy {result.accuracy:.4f}" in done.stdout


def _mark_kernels(folder: Path) -> None:
    """Add a comment to kernels.cl and sign its new checksum into the manifest."""
    from convgraph.artifact import _sha256

    kernels = folder / "kernels.cl"
    kernels.write_text(kernels.read_text() + "\n/* stored, not regenerated */\n")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["kernels.cl"] = {"sha256": _sha256(kernels),
                                       "size": kernels.stat().st_size}
    (folder / MANIFEST).write_text(json.dumps(sign(manifest)))


def test_the_stored_kernels_are_what_runs(made, tmp_path):
    """On the device it was compiled for, the program is kernels.cl as stored (here with a
    comment added and the manifest signed again), not one generated anew."""
    _, spec = made
    convgraph.compile(spec).save(tmp_path / "art")
    _mark_kernels(tmp_path / "art")
    assert "stored, not regenerated" in convgraph.load(tmp_path / "art").source


@pytest.mark.parametrize("spec_path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_a_plan_record_rebuilds_the_identical_plan(spec_path):
    """Every example spec's inference plan, through JSON as plan.json holds it, comes back
    equal, and generates the identical program."""
    from convgraph.codegen.plan import plan_forward
    from convgraph.runtime.target import Target

    graph = convgraph.analyse(spec_path)
    original = plan_forward(graph, Target.open().profile)
    record = json.loads(json.dumps(plan_record(original)))
    plan = plan_from_record(record, graph, "plan.json")
    assert plan_record(plan) == plan_record(original)
    title = graph.graph["name"]
    assert program_source(plan, title) == program_source(original, title)


def test_a_plan_of_another_network_is_refused(made):
    _, spec = made
    other = convgraph.compile(SPECS / "seed.yaml", batch=2)
    record = json.loads(json.dumps(plan_record(other.plan)))
    with pytest.raises(convgraph.DataError, match="not an inference plan of this network"):
        plan_from_record(record, convgraph.analyse(spec), "plan.json")
    record["launches"][0]["args"][0] = {"buffer": ["nonsense", "", "", None]}
    with pytest.raises(convgraph.DataError, match="plan.json is not an inference plan"):
        plan_from_record(record, other.graph, "plan.json")


def _flip_kernels(folder: Path) -> None:
    data = bytearray((folder / "kernels.cl").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "kernels.cl").write_bytes(bytes(data))


def _unlist_spec(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]["spec.yaml"]
    (folder / MANIFEST).write_text(json.dumps(sign(manifest)))


def _forge_manifest(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["batch"] = 1  # changed without signing again
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _list_a_foreign_file(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "size": 1}
    (folder / MANIFEST).write_text(json.dumps(sign(manifest)))


def _kernels_as_a_link(folder: Path) -> None:
    (folder / "elsewhere.cl").write_bytes((folder / "kernels.cl").read_bytes())
    (folder / "kernels.cl").unlink()
    (folder / "kernels.cl").symlink_to("elsewhere.cl")


def _manifest_as_a_fifo(folder: Path) -> None:
    (folder / MANIFEST).unlink()
    os.mkfifo(folder / MANIFEST)


DAMAGE = {
    "kernels-byte-flipped": (_flip_kernels, "kernels.cl fails its checksum"),
    "graph-json-deleted": (lambda f: (f / "graph.json").unlink(), "graph.json is missing"),
    "plan-json-resized": (lambda f: (f / "plan.json").write_text("{}"),
                          "plan.json has 2 bytes"),
    "weights-truncated": (lambda f: (f / "weights.npz").write_bytes(
        (f / "weights.npz").read_bytes()[:100]), "weights.npz has 100 bytes"),
    "spec-not-listed": (_unlist_spec, "does not list spec.yaml"),
    "manifest-forged": (_forge_manifest, "manifest.json fails its checksum"),
    "manifest-deleted": (lambda f: (f / MANIFEST).unlink(), "has no manifest.json"),
    "manifest-deep-json": (lambda f: (f / MANIFEST).write_text("[" * 100_000),
                           "manifest.json is not JSON"),
    "manifest-a-fifo": (_manifest_as_a_fifo, "manifest.json is not a regular file"),
    "manifest-lists-a-foreign-path": (_list_a_foreign_file, "lists '../../etc/passwd'"),
    "kernels-a-symlink": (_kernels_as_a_link, "kernels.cl is not a regular file"),
}


@pytest.fixture(scope="module")
def pristine(made, tmp_path_factory):
    """An artifact with weights, written by `compile -o --weights`, copied for each case."""
    folder, spec = made
    target = tmp_path_factory.mktemp("pristine") / "art"
    done = convgraph_cli("compile", spec, "-o", target, "--weights", folder / "w.npz")
    assert done.returncode == 0, done.stderr
    return target


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_artifact_is_refused_by_the_cli(made, pristine, tmp_path, damage):
    import shutil

    folder, _ = made
    target = tmp_path / "art"
    shutil.copytree(pristine, target)
    harm, message = DAMAGE[damage]
    harm(target)
    for command in (("run", target, "--predict", folder / "x.npy"), ("eval", target)):
        done = convgraph_cli(*command)
        assert done.returncode == 5, (command, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert "not used (nor silently recompiled)" in done.stderr
    with pytest.raises(convgraph.DataError, match=message):
        convgraph.load(target)


def test_another_device_replans_and_rebuilds_with_a_note(pristine, made, tmp_path):
    """A manifest recording another device (signed again): the kernels are planned and built
    for this one, one note on stderr, and the predictions are those of the weights."""
    import shutil

    folder, spec = made
    target = tmp_path / "art"
    shutil.copytree(pristine, target)
    device = json.loads((target / MANIFEST).read_text())["device"]
    resign(target, device=dict(device, name="Some Other GPU", vendor="Elsewhere"))
    done = convgraph_cli("run", target, "--predict", folder / "x.npy", "--output",
                         tmp_path / "s.npy")
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "note:" in line]
    assert len(notes) == 1 and "compiled for Some Other GPU" in notes[0], done.stderr
    assert "rebuilding its kernels for" in notes[0]
    reference = convgraph.compile(spec)
    reference.load_weights(folder / "w.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"),
                                  reference.predict(np.load(folder / "x.npy")))


def test_a_device_name_from_the_manifest_is_printed_escaped(pristine, tmp_path, capsys):
    import shutil

    target = tmp_path / "art"
    shutil.copytree(pristine, target)
    device = json.loads((target / MANIFEST).read_text())["device"]
    resign(target, device=dict(device, name="GPU\x1b[2J\u202e"))
    convgraph.load(target)
    err = capsys.readouterr().err
    assert "compiled for GPU\\x1b[2J" in err and "\x1b" not in err and "\u202e" not in err


def test_another_pocl_device_replans_and_rebuilds(pristine, made, tmp_path):
    """A real other device: PoCL's 'basic' driver (POCL_DEVICES=basic) names its device
    differently from the 'pthread' one the artifact was compiled on."""
    folder, spec = made
    device = json.loads((pristine / MANIFEST).read_text())["device"]
    if not device["name"].startswith("pthread"):
        pytest.skip("the artifact was not compiled on PoCL's pthread device")
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "run", str(pristine),
                           "--predict", str(folder / "x.npy"), "--output", str(tmp_path / "s.npy")],
                          capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, POCL_DEVICES="basic", CONVGRAPH_DEVICE="pocl"))
    if done.returncode == 4:
        pytest.skip(f"PoCL's basic device is not available here: {done.stderr}")
    assert done.returncode == 0, done.stderr
    assert "rebuilding its kernels for" in done.stderr and "basic" in done.stderr, done.stderr
    reference = convgraph.compile(spec)
    reference.load_weights(folder / "w.npz")
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"),
                               reference.predict(np.load(folder / "x.npy")), rtol=1e-4, atol=1e-5)


def test_another_convgraph_version_rebuilds_with_a_note(pristine, tmp_path, capsys):
    import shutil

    target = tmp_path / "art"
    shutil.copytree(pristine, target)
    _mark_kernels(target)
    resign(target, convgraph="0.0.1")
    model = convgraph.load(target)
    assert "compiled by convgraph 0.0.1; rebuilding" in capsys.readouterr().err
    assert "stored, not regenerated" not in model.source  # generated by this version


def test_a_second_compile_replaces_an_artifact_whole(made, tmp_path):
    _, spec = made
    target = tmp_path / "art"
    assert convgraph_cli("compile", spec, "-o", target).returncode == 0
    assert convgraph_cli("compile", SPECS / "seed.yaml", "-o", target).returncode == 0
    assert read_artifact(target).graph.graph["name"] == "seed"
    assert sorted(os.listdir(tmp_path)) == ["art"]  # no temporary or old folder left beside it
    failed = convgraph_cli("compile", spec, "-o", target, "--weights", tmp_path / "none.npz")
    assert failed.returncode == 5  # refused before anything was written
    assert read_artifact(target).graph.graph["name"] == "seed"


def test_a_killed_write_leaves_nothing_that_outlives_the_next(made, tmp_path):
    """The temporary folder of a write that was killed (a dead pid in its name) goes at the
    next write of the same artifact; one of a live writer stays."""
    _, spec = made
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead = tmp_path / f".art.{int(finished.stdout)}.abcdefgh.tmp"
    alive = tmp_path / f".art.old.{os.getpid()}.abcdefgh.tmp"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "spec.yaml").write_text("half written\n")
    assert convgraph_cli("compile", spec, "-o", tmp_path / "art").returncode == 0
    assert sorted(os.listdir(tmp_path)) == sorted(["art", alive.name])


def test_a_folder_that_is_not_an_artifact_is_not_overwritten(made, tmp_path):
    _, spec = made
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me\n")
    done = convgraph_cli("compile", spec, "-o", target)
    assert done.returncode == 7, done.stderr
    assert "is not a compiled artifact" in done.stderr and "not overwritten" in done.stderr
    assert os.listdir(target) == ["notes.txt"]
    (target / "notes.txt").unlink()  # an empty folder is fine
    assert convgraph_cli("compile", spec, "-o", target).returncode == 0


def test_an_artifact_without_kernels_builds_them_with_a_note(made, tmp_path, capsys):
    _, spec = made
    done = convgraph_cli("compile", spec, "--no-kernels", "-o", tmp_path / "art")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "art" / "kernels.cl").exists()
    model = convgraph.load(tmp_path / "art")
    assert "holds no kernels" in capsys.readouterr().err
    assert model.predict(np.zeros((1, 1, 8, 8), np.uint8)).shape == (1, 4)


def test_weights_for_compile_need_an_artifact(made):
    folder, spec = made
    done = convgraph_cli("compile", spec, "--weights", folder / "w.npz")
    assert done.returncode == 2 and "needs -o DIR" in done.stderr, done.stderr


def test_eval_of_an_artifact_without_weights_asks_for_them(made, tmp_path):
    _, spec = made
    assert convgraph_cli("compile", spec, "-o", tmp_path / "art").returncode == 0
    done = convgraph_cli("eval", tmp_path / "art")
    assert done.returncode == 2 and "--weights" in done.stderr, done.stderr
