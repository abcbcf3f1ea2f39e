"""The Python API and the command line are one: whatever `convgraph run` and `eval` do, a Python
user gets the same result from ``compile(...).fit``, ``Model.evaluate`` and ``Model.predict``,
bitwise; one batch rule; one target (device, context, queue) per model; a weights file read once.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import convgraph
from convgraph.codegen.launches import grad
from convgraph.data import Dataset
from convgraph.train.checkpoint import load_checkpoint

from .conftest import tiny_images

pytestmark = [pytest.mark.device, pytest.mark.timeout(300)]

# batchnorm (running statistics), dropout (seeded per step), Adam, a warm-up and a cosine
# schedule (a learning-rate curve that moves), normalisation from the training set
SPEC = """\
input: 8x8x1
pattern: "[INPUT-CONV(4, 3, pad=1)-BN-RELU-POOL-DROPOUT(0.2)-FC(4)]"
train: {epochs: 3, batch: 16, lr: 0.01, seed: 5, dataset: npz, optimizer: adam,
        schedule: cosine, warmup_epochs: 1}
"""
LIMIT = 80  # of the 96 training images: --limit on the command line, Dataset.first in Python
TIMINGS = ("images_per_s", "seconds")


class _Rates:
    """Records every learning rate the training loop computes (each step's, in order)."""

    def __init__(self, monkeypatch):
        import convgraph.train.loop as loop

        self.values = []
        real = loop.learning_rate

        def recorded(*args):
            self.values.append(real(*args))
            return self.values[-1]

        monkeypatch.setattr(loop, "learning_rate", recorded)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The spec and its data set as files, trained once by `convgraph run` (in-process); the
    learning rate of every step as ``trained.rates``."""
    from convgraph.cli import main

    folder = tmp_path_factory.mktemp("api")
    x, y = tiny_images(0, 96)
    x_test, y_test = tiny_images(1, 32)
    np.savez(folder / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    spec = folder / "tiny.yaml"
    spec.write_text(SPEC.replace("dataset: npz,", f"dataset: npz, data: {folder / 'd.npz'},"))
    with pytest.MonkeyPatch.context() as patch:
        rates = _Rates(patch)
        status = main(["run", str(spec), "--limit", str(LIMIT), "--metrics",
                       str(folder / "m.jsonl"), "--save", str(folder / "cli.npz"),
                       "--checkpoint-dir", str(folder / "ck")])
    assert status == 0
    (folder / "rates.json").write_text(json.dumps(rates.values))
    return folder, spec


def test_cli_run_and_api_fit_end_bitwise_equal(trained, monkeypatch):
    """Same spec, same seed: the weights, the normalisation, every epoch's metrics and the
    learning-rate curve (every step's rate) of `convgraph run` and of ``compile(...).fit`` are
    equal, bitwise."""
    folder, spec = trained
    model = convgraph.compile(spec)
    rates = _Rates(monkeypatch)
    records = model.fit(model.dataset("train").first(LIMIT), test_data=model.dataset("test"))
    assert rates.values == json.loads((folder / "rates.json").read_text())
    assert len(set(rates.values)) > 10  # warm-up, then cosine: the curve moves
    cli_params, _, header = load_checkpoint(folder / "cli.npz")
    params = model.params
    assert set(params) == set(cli_params)
    for key, value in params.items():
        np.testing.assert_array_equal(value, cli_params[key], err_msg=key)
    np.testing.assert_array_equal(model.normalization[0], np.array(header["mean"], np.float32))
    np.testing.assert_array_equal(model.normalization[1], np.array(header["std"], np.float32))
    lines = [json.loads(line) for line in (folder / "m.jsonl").read_text().splitlines()]
    api = [{k: v for k, v in r.as_json().items() if k not in TIMINGS} for r in records]
    assert api == [{k: v for k, v in line.items() if k not in TIMINGS} for line in lines]
    assert [round(r.lr, 6) for r in records] == [line["lr"] for line in lines]
    model.save(folder / "api.npz")  # what --save writes, from Python
    saved, _, api_header = load_checkpoint(folder / "api.npz")
    for key, value in saved.items():
        np.testing.assert_array_equal(value, cli_params[key], err_msg=key)
    assert (api_header["mean"], api_header["std"]) == (header["mean"], header["std"])


def test_eval_matches_model_evaluate(trained, cli):
    folder, spec = trained
    status, out, err = cli("eval", spec, "--weights", folder / "ck" / "last.npz", "--confusion")
    assert status == 0, err
    model = convgraph.compile(spec)
    model.load_weights(folder / "ck" / "last.npz")
    result = model.evaluate(model.dataset("test"))
    right = int((result.predictions == result.labels).sum())
    assert (f"test loss {result.loss:.4f}, test accuracy {result.accuracy:.4f} "
            f"({right:,} of {len(result.labels):,})") in out
    rows = [line for line in out.splitlines() if re.match(r"^\W*[0-3]\W", line)]
    matrix = result.confusion(model.classes)
    assert [[int(v) for v in re.findall(r"\d+", row)[1:]] for row in rows] == matrix.tolist()
    # the last epoch's test figures, from the inference-and-loss program
    last = json.loads((folder / "m.jsonl").read_text().splitlines()[-1])
    assert (round(result.loss, 6), round(result.accuracy, 6)) == (last["test_loss"],
                                                                  last["test_accuracy"])


def test_eval_of_plain_weights_normalises_with_the_training_set(trained, cli, tmp_path):
    """A weights file without statistics: both normalise with the training set's, as the spec
    says (normalize: true)."""
    folder, spec = trained
    params = load_checkpoint(folder / "cli.npz")[0]
    np.savez(tmp_path / "plain.npz", **params)
    status, out, err = cli("eval", spec, "--weights", tmp_path / "plain.npz")
    assert status == 0, err
    model = convgraph.Model(convgraph.analyse(spec))
    model.load_weights(tmp_path / "plain.npz", train_data=model.dataset("train"))
    result = model.evaluate(model.dataset("test"))
    assert f"test loss {result.loss:.4f}, test accuracy {result.accuracy:.4f}" in out


def test_predict_matches_model_predict(trained, cli, tmp_path, monkeypatch):
    """--predict prints and saves what Model.predict returns; the checkpoint is read once."""
    folder, spec = trained
    x, _ = tiny_images(7, 5)
    np.save(tmp_path / "x.npy", x)
    weights = folder / "cli.npz"
    import convgraph.params

    reads = []
    real_load = convgraph.params.load_arrays  # every .npz/.npy convgraph reads goes through it

    def counted(path, *args, **kwargs):
        reads.append(str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(convgraph.params, "load_arrays", counted)
    status, out, err = cli("run", spec, "--weights", weights, "--predict", tmp_path / "x.npy",
                           "--output", tmp_path / "scores.npy")
    assert status == 0, err
    assert reads.count(str(weights)) == 1, reads
    monkeypatch.undo()
    model = convgraph.compile(spec)
    model.load_weights(weights)
    scores = model.predict(x)
    np.testing.assert_array_equal(np.load(tmp_path / "scores.npy"), scores)
    assert f"{int(np.argmax(scores[0]))}: " in out and "class scores (5 images)" in out


def test_the_batch_is_the_request_else_the_spec(trained, cli):
    """One rule, in the API and the command line: train: batch 16 plans 16, unless asked."""
    folder, spec = trained
    assert convgraph.compile(spec).batch == 16
    assert convgraph.compile(spec, batch=4).batch == 4
    status, out, _ = cli("compile", spec, "--json")
    assert status == 0 and json.loads(out)["batch"] == 16
    model = convgraph.Model(convgraph.analyse(spec), batch=8)
    model.fit(model.dataset("train").first(16), epochs=1)
    assert model.trainer.session.batch == 8  # fit trains at the model's batch
    with pytest.raises(convgraph.DataError, match="at least 1"):
        convgraph.compile(spec, batch=0)


def test_a_model_trains_evaluates_and_verifies_on_its_own_target(trained, monkeypatch):
    """One device opened once: fit, evaluate and the training checks of --verify run on the
    model's context (no other is created), and evaluation builds no backward or optimizer
    kernel."""
    import pyopencl as cl

    from convgraph.verify import verify_training

    folder, spec = trained
    model = convgraph.compile(spec)
    contexts = []
    real = cl.Context

    def counted(*args, **kwargs):
        contexts.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(cl, "Context", counted)
    data = model.dataset("train").first(32)
    model.fit(data, epochs=1)
    result = model.evaluate(model.dataset("test"))
    checks = verify_training(model.graph, model.target)
    assert contexts == [] and len(checks) > 5  # (conv1.bias before batchnorm: a zero gradient)
    assert model.trainer.session.target is model.target
    evaluation = model._evaluation
    assert evaluation.target is model.target and 0 <= result.accuracy <= 1
    kinds = {spec.selector for spec in evaluation.plan.kernels.values()}
    training = {spec.selector for spec in model.trainer.session.plan.kernels.values()}
    assert "SOFTMAX_CROSS_ENTROPY" in kinds and kinds < training
    assert not any("BACKWARD" in kind or kind.endswith("_STEP") for kind in kinds), kinds
    buffers = [*evaluation.plan.buffer_sizes(model.batch), *evaluation.plan.fixed_sizes()]
    gradients = [name for name in buffers if name.split(":")[0] in ("grad", "pgrad", "state")]
    assert gradients == [grad(evaluation.plan.logits).name], gradients  # the loss kernel's


def test_fit_accepts_arrays_and_callbacks(trained):
    """(x, y) arrays train as a Dataset does, and callbacks see every batch and epoch."""
    from convgraph.train.loop import Callback

    folder, spec = trained
    x, y = tiny_images(0, 32)
    seen = []

    class Log(Callback):
        def on_train_begin(self, trainer):
            seen.append("begin")

        def on_batch_end(self, trainer, done, total, *figures):
            seen.append((trainer.progress.epoch, done, total))

        def on_epoch_end(self, trainer, record):
            seen.append(record.epoch)

    first = convgraph.compile(spec)
    first.fit((x, y), epochs=2, callbacks=[Log()])
    assert seen == ["begin", (0, 1, 2), (0, 2, 2), 1, (1, 1, 2), (1, 2, 2), 2]
    second = convgraph.compile(spec)
    second.fit(Dataset("same", x, y.astype(np.int64), 4), epochs=2)
    for key, value in first.params.items():
        np.testing.assert_array_equal(value, second.params[key])


def test_weights_whose_normalisation_has_other_channels_are_refused(tmp_path, cli):
    """A weights file whose recorded mean/std have another channel count than the network's
    input (a checkpoint of another network with the same layers' shapes, or a forged one, its
    checksum recomputed by the writer) is a data error naming the file, not exit 70 at the
    first --predict or eval."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text('{"name": "tiny", "input": "8x8x1", '
                    '"pattern": "[INPUT-CONV(4, 3, pad=1)-RELU-POOL-FC(4)]"}\n')
    model = convgraph.compile(str(spec), device="cpu", batch=4)
    model.normalization = (np.array([0.5, 0.5]), np.array([0.2, 0.2]))  # 2 channels, not 1
    weights = tmp_path / "w.npz"
    model.save(weights)
    x = tmp_path / "x.npy"
    np.save(x, tiny_images(3, 4)[0].astype(np.float32))
    status, _, err = cli("run", spec, "--predict", x, "--weights", weights)
    assert status == 5, err
    assert str(weights) in err and "1-channel input" in err, err
    with pytest.raises(convgraph.DataError, match="2 channel"):
        convgraph.compile(str(spec), device="cpu", batch=4).load_weights(weights)


def test_fit_epochs_trains_what_run_epochs_trains(tmp_path, monkeypatch):
    """``fit(epochs=2)`` on a spec of 5 cosine epochs is ``convgraph run --epochs 2``: the
    schedule spans the 2 epochs asked for (not the spec's 5), so the learning-rate curve and
    the weights are bitwise those of the command line."""
    from convgraph.cli import main
    from convgraph.train.schedule import learning_rate

    x, y = tiny_images(0, 64)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:16], y_test=y[:16])
    spec = tmp_path / "cosine.yaml"
    spec.write_text(SPEC.replace("epochs: 3", "epochs: 5").replace(
        "dataset: npz,", f"dataset: npz, data: {tmp_path / 'd.npz'},"))
    with pytest.MonkeyPatch.context() as patch:
        cli_rates = _Rates(patch)
        assert main(["run", str(spec), "--epochs", "2", "--save", str(tmp_path / "cli.npz")]) == 0
    model = convgraph.compile(spec)
    rates = _Rates(monkeypatch)
    history = model.fit(model.dataset("train"), epochs=2, test_data=model.dataset("test"),
                        verbose=0)
    assert history.epoch == [1, 2] and rates.values == cli_rates.values
    settings = model.graph.graph["train"]  # the spec's: 5 epochs
    last_step = (1, 3, 4)  # epoch 2 (0-based 1), its last step of 4
    assert rates.values[-1] == learning_rate({**settings, "epochs": 2}, *last_step)
    assert rates.values[-1] < learning_rate(settings, *last_step) / 4  # far along the cosine
    cli_params, _, header = load_checkpoint(tmp_path / "cli.npz")
    assert header["settings"]["epochs"] == 2
    for key, value in model.params.items():
        np.testing.assert_array_equal(value, cli_params[key], err_msg=key)
    assert model.trainer.header()["settings"] == header["settings"]
