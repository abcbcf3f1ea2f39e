"""The Python API as a Keras user expects it: summary(), fit's arguments (validation_split,
shuffle, verbose, batch_size, callbacks) and its History, the callbacks that stop training,
save checkpoints and set the learning rate, predict and evaluate on iterables of batches, and
every argument refused clearly before anything is built."""

from __future__ import annotations

import json

import numpy as np
import pytest

import convgraph
from convgraph.callbacks import (
    Callback,
    EarlyStopping,
    History,
    LearningRateScheduler,
    ModelCheckpoint,
)
from convgraph.errors import DataError, UsageError

from .conftest import tiny_images

pytestmark = [pytest.mark.device, pytest.mark.timeout(300)]

# plain SGD at a constant rate: a learning rate a callback sets is visible in the weights
SPEC = {"name": "tiny", "input": "8x8x1", "pattern": "[INPUT-CONV(4, 3, pad=1)-RELU-POOL-FC(4)]",
        "train": {"epochs": 5, "batch": 16, "lr": 0.05, "seed": 3, "optimizer": "sgd",
                  "momentum": 0.9}}


@pytest.fixture(scope="module")
def graph():
    return convgraph.analyse(SPEC)


@pytest.fixture(scope="module")
def data():
    return tiny_images(0, 64)


def _model(graph):
    """A model of the graph; nothing is built until it is used."""
    return convgraph.Model(graph)


def _assert_same_params(first: dict, second: dict) -> None:
    assert set(first) == set(second)
    for key, value in first.items():
        np.testing.assert_array_equal(value, second[key], err_msg=key)


# ---------------------------------------------------------------------------- summary

def test_summary_is_what_compile_prints(graph, cli, tmp_path, capsys):
    """The text, the lines given to print_fn and the dict are `convgraph compile`'s table and
    `compile --json`'s summary."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(json.dumps(SPEC))
    status, out, err = cli("compile", spec, "--no-kernels")
    assert status == 0, err
    model = convgraph.Model(convgraph.analyse(str(spec)))
    text = model.summary(print_fn=None)
    assert "conv1" in text and "total" in text and text in out
    lines = []
    assert model.summary(print_fn=lines.append) is None
    assert lines == text.splitlines()
    model.summary()
    assert capsys.readouterr().out == text
    status, out, err = cli("compile", spec, "--no-kernels", "--json")
    described = model.summary(as_dict=True)
    assert described["total_params"] > 0
    assert {key: json.loads(out)[key] for key in described} == json.loads(json.dumps(described))
    with pytest.raises(UsageError, match="print_fn"):
        model.summary(print_fn="stdout")


# ---------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("epochs", [0, -1, 2.5, True, "2", 100_001])
def test_fit_refuses_epochs_run_refuses(graph, data, epochs):
    """epochs=0 is refused like `run --epochs 0` (it never means "the spec's"), before anything
    is built."""
    model = _model(graph)
    with pytest.raises(UsageError, match="epochs must be a whole number") as caught:
        model.fit(data, epochs=epochs)
    assert caught.value.hint and "train: epochs" in caught.value.hint
    assert caught.value.exit_status == 2
    assert model._training is None and model._inference is None


@pytest.mark.parametrize("arguments, error, words", [
    ({"batch_size": 8}, UsageError, "planned for batches of 16"),
    ({"batch_size": 0}, UsageError, "at least 1"),
    ({"validation_split": 1.5}, UsageError, "between 0 and 1"),
    ({"validation_split": True}, UsageError, "between 0 and 1"),
    ({"validation_split": 0.995}, DataError, "leaves 0 to train on and 64"),
    ({"validation_split": 0.2, "validation_data": "x"}, UsageError, "both validation_split"),
    ({"validation_data": "x", "test_data": "y"}, UsageError, "one thing"),
    ({"validation_data": 5}, UsageError, "Dataset or an"),
    ({"shuffle": "no"}, UsageError, "shuffle must be True or False"),
    ({"verbose": 2}, UsageError, "verbose must be 0"),
    ({"callbacks": EarlyStopping("train_loss")}, UsageError, "a list"),
    ({"callbacks": [object()]}, UsageError, "callbacks\\[0\\]"),
    ({"report": 3}, UsageError, "report must be a function"),
    ({"resume": True}, UsageError, "needs checkpoint_dir"),
])
def test_fit_refuses_bad_arguments_before_building(graph, data, arguments, error, words):
    model = _model(graph)
    with pytest.raises(error, match=words) as caught:
        model.fit(data, epochs=1, **arguments)
    assert type(caught.value) is error and caught.value.exit_status != 70
    assert model._training is None


@pytest.mark.parametrize("make, error, words", [
    (lambda x, y: (x[:, :, :4], y), DataError, "has shape"),
    (lambda x, y: (x, y[:5]), DataError, "labels"),
    (lambda x, y: (x, y + 4), DataError, "outside 0..3"),
    (lambda x, y: (x, y + 0.5), DataError, "not class indices"),
    (lambda x, y: (x.astype(np.float32) * np.nan, y), DataError, "finite"),
    (lambda x, y: 5, UsageError, "Dataset or an"),
    (lambda x, y: x, UsageError, "Dataset or an"),
])
def test_fit_refuses_data_that_does_not_fit(graph, data, make, error, words):
    model = _model(graph)
    with pytest.raises(error, match=words):
        model.fit(make(*data), epochs=1)
    assert model._training is None


def test_monitored_metrics_must_exist(graph, data):
    """A metric training does not measure is refused when the callback is made; a test_
    metric without test data when training starts, before the first batch."""
    with pytest.raises(UsageError, match="'val_acc'.* Did you mean 'val_accuracy'"):
        EarlyStopping("val_acc")
    with pytest.raises(UsageError, match="mode"):
        EarlyStopping("train_loss", mode="up")
    with pytest.raises(UsageError, match="patience"):
        EarlyStopping("train_loss", patience=-1)
    model = _model(graph)
    seen = []

    class Batches(Callback):
        def on_batch_end(self, trainer, *figures):
            seen.append(figures)

    for callback in (EarlyStopping("test_accuracy"), ModelCheckpoint("w.npz", "val_loss", True)):
        with pytest.raises(UsageError, match="no test data") as caught:
            model.fit(data, epochs=1, callbacks=[Batches(), callback])
        assert "validation_split" in caught.value.hint
    assert seen == []


# ---------------------------------------------------------------------------- fit

def test_fit_returns_a_history(graph, data):
    model = _model(graph)
    history = model.fit(data, epochs=2, verbose=0)
    assert isinstance(history, History) and len(history) == 2 and history.epoch == [1, 2]
    assert history[-1].epoch == 2 and [r.epoch for r in history] == [1, 2]
    assert set(history.history) == {"train_loss", "train_accuracy", "lr", "images_per_s",
                                    "seconds"}  # no test_ metrics without test data
    assert history.history["train_loss"] == [r.train_loss for r in history.records]
    assert not history.stopped_early
    x, y = data
    validated = model.fit((x[:48], y[:48]), epochs=1, validation_data=(x[48:], y[48:]),
                          verbose=0)
    assert validated.history["test_accuracy"] == [validated[0].test_accuracy]


def test_validation_split_holds_out_the_last_fraction(graph, data):
    """As Keras: the last 25% of the training data, before shuffling, is the validation data;
    the epoch's test figures are the model's evaluation of exactly those images."""
    x, y = data
    model = _model(graph)
    history = model.fit((x, y), epochs=1, validation_split=0.25, verbose=0)
    trainer = model.trainer
    np.testing.assert_array_equal(trainer.train_data.x, x[:48])
    np.testing.assert_array_equal(trainer.test_data.y, y[48:])
    held_out = model.evaluate((x[48:], y[48:]))
    assert (held_out.loss, held_out.accuracy) == (history[0].test_loss,
                                                  history[0].test_accuracy)


def test_shuffle_false_visits_the_data_in_order_every_epoch(graph, data):
    x, y = data

    class Labels(Callback):
        def __init__(self):
            self.epochs = {}

        def on_batch_end(self, trainer, done, total, *figures):
            labels = trainer.session._labels  # what this step trained on, as the device got it
            self.epochs.setdefault(trainer.progress.epoch, []).extend(labels.tolist())

    ordered, shuffled = Labels(), Labels()
    _model(graph).fit((x, y), epochs=2, shuffle=False, verbose=0, callbacks=[ordered])
    _model(graph).fit((x, y), epochs=2, verbose=0, callbacks=[shuffled])
    assert ordered.epochs == {0: y.tolist(), 1: y.tolist()}
    assert shuffled.epochs[0] != y.tolist() and sorted(shuffled.epochs[0]) == sorted(y)


def test_verbose_prints_the_epoch_lines_once(graph, data, capsys, cli, tmp_path):
    """verbose=1 prints run's line per epoch, verbose=0 nothing; `convgraph run` draws its own
    progress, so its lines are not doubled."""
    model = _model(graph)
    model.fit(data, epochs=2)
    out = capsys.readouterr().out
    assert out.count("epoch 1: train loss") == 1 and out.count("epoch 2: train loss") == 1
    model.fit(data, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(json.dumps({**SPEC, "train": {**SPEC["train"], "dataset": "embedded"}}))
    status, out, err = cli("run", spec, "--epochs", "1", "--limit", "32")
    assert status == 0, err
    assert out.count("epoch 1: train loss") == 1, out


def test_batch_size_of_the_plan_is_accepted(graph, data):
    model = _model(graph)
    assert len(model.fit(data, epochs=1, batch_size=16, verbose=0)) == 1
    assert model.trainer.session.batch == 16


# ---------------------------------------------------------------------------- callbacks

def test_hooks_are_called_in_order(graph, data):
    x, y = data
    calls = []

    class Log(Callback):
        def on_train_begin(self, trainer):
            calls.append("train_begin")

        def on_epoch_begin(self, trainer, epoch):
            calls.append(("epoch_begin", epoch))

        def on_batch_begin(self, trainer, batch, total):
            calls.append(("batch_begin", batch, total))

        def on_batch_end(self, trainer, done, total, *figures):
            calls.append(("batch_end", done))

        def on_epoch_end(self, trainer, record):
            calls.append(("epoch_end", record.epoch))

        def on_train_end(self, trainer, records):
            calls.append(("train_end", len(records)))

    _model(graph).fit((x[:32], y[:32]), epochs=2, verbose=0, callbacks=[Log()])
    epoch = lambda e: [("epoch_begin", e), ("batch_begin", 0, 2), ("batch_end", 1),  # noqa: E731
                       ("batch_begin", 1, 2), ("batch_end", 2), ("epoch_end", e + 1)]
    assert calls == ["train_begin", *epoch(0), *epoch(1), ("train_end", 2)]


def test_stop_training_ends_cleanly_after_the_epoch(graph, data, tmp_path):
    """A callback that asks mid-epoch gets the whole epoch: its record, its checkpoint, the
    weights it ended with."""
    steps = []

    class StopSoon(Callback):
        def on_batch_end(self, trainer, done, total, *figures):
            steps.append(done)
            if done == 1:
                trainer.stop_training = True

    model = _model(graph)
    history = model.fit(data, epochs=5, verbose=0, callbacks=[StopSoon()],
                        checkpoint_dir=tmp_path / "ck")
    assert steps == [1, 2, 3, 4] and len(history) == 1 and history.stopped_early
    saved, _ = convgraph.load_weights(tmp_path / "ck" / "last.npz")
    _assert_same_params(model.params, saved)


def test_early_stopping_stops_and_restores_the_best_weights(graph, data, tmp_path):
    """Improving by more than min_delta=10 is impossible after the first epoch: with patience
    2 training stops after epoch 3, and the model ends with epoch 1's weights (saved each
    epoch by ModelCheckpoint, with the path formatted per epoch)."""
    stopper = EarlyStopping("loss", patience=2, min_delta=10.0, restore_best_weights=True)
    saver = ModelCheckpoint(str(tmp_path / "w-{epoch}-{train_loss:.3f}.npz"))
    model = _model(graph)
    history = model.fit(data, epochs=5, verbose=0, callbacks=[stopper, saver])
    assert history.epoch == [1, 2, 3] and stopper.stopped_epoch == 3
    assert stopper.best == history[0].train_loss
    assert [path.name for path in saver.saved] == [
        f"w-{r.epoch}-{r.train_loss:.3f}.npz" for r in history]
    first, normalization = convgraph.load_weights(saver.saved[0])
    _assert_same_params(model.params, first)
    last, _ = convgraph.load_weights(saver.saved[-1])
    assert any(not np.array_equal(last[key], first[key]) for key in first)
    for saved, kept in zip(normalization, model.normalization):  # normalize: true
        np.testing.assert_array_equal(saved, kept)


def test_model_checkpoint_save_best_only_writes_improvements(graph, data, tmp_path):
    x, y = data
    saver = ModelCheckpoint(tmp_path / "best-{epoch}.npz", monitor="val_accuracy",
                            save_best_only=True)
    model = _model(graph)
    history = model.fit((x, y), epochs=4, validation_split=0.25, verbose=0, callbacks=[saver])
    best, improved = -1.0, []
    for record in history:
        if record.test_accuracy > best:
            best = record.test_accuracy
            improved.append(record.epoch)
    assert [path.name for path in saver.saved] == [f"best-{e}.npz" for e in improved]
    reloaded = _model(graph)
    reloaded.load_weights(saver.saved[-1])
    assert reloaded.evaluate((x[48:], y[48:])).accuracy == best


def test_model_checkpoint_paths_are_checked_before_training(graph, data, tmp_path):
    (tmp_path / "file").write_text("")
    for path, error in ((str(tmp_path / "w-{nope}.npz"), UsageError),
                        (str(tmp_path / "file" / "w.npz"), convgraph.errors.OutputError)):
        model = _model(graph)
        with pytest.raises(error):
            model.fit(data, epochs=1, verbose=0, callbacks=[ModelCheckpoint(path)])


def test_learning_rate_scheduler_sets_the_rate_the_optimizer_uses(graph, data):
    """A scheduler's rate is the one every step of the epoch uses: its weights are those of a
    spec whose lr is that rate, bitwise."""
    seen = []

    def halve_after_first(epoch, lr):
        seen.append((epoch, lr))
        return lr if epoch == 0 else lr / 2

    scheduled = _model(graph)
    history = scheduled.fit(data, epochs=1, verbose=0,
                            callbacks=[LearningRateScheduler(lambda epoch, lr: 0.02)])
    assert history[0].lr == 0.02
    at_002 = convgraph.Model(convgraph.analyse(SPEC, ["train.lr=0.02"]))
    at_002.fit(data, epochs=1, verbose=0)
    _assert_same_params(scheduled.params, at_002.params)
    at_005 = _model(graph)
    at_005.fit(data, epochs=1, verbose=0)
    assert any(not np.array_equal(at_005.params[k], at_002.params[k]) for k in at_002.params)
    history = _model(graph).fit(data, epochs=3, verbose=0,
                                callbacks=[LearningRateScheduler(halve_after_first)])
    assert seen == [(0, 0.05), (1, 0.05), (2, 0.025)]  # Keras's (epoch, the rate so far)
    assert history.history["lr"] == [0.05, 0.025, 0.0125]
    for bad in (0.0, float("nan"), "fast", True):
        with pytest.raises(UsageError, match="learning rate is a finite number"):
            _model(graph).fit(data, epochs=1, verbose=0,
                              callbacks=[LearningRateScheduler(lambda epoch, lr, b=bad: b)])
    with pytest.raises(UsageError, match="function"):
        LearningRateScheduler(0.1)


# ---------------------------------------------------------------------------- predict, evaluate

def test_predict_takes_arrays_and_iterables_of_batches(graph, data):
    x, _ = data
    model = _model(graph)
    whole = model.predict(x)
    assert whole.shape == (64, 4)
    np.testing.assert_array_equal(model.predict(x[i:i + 10] for i in range(0, 64, 10)), whole)
    np.testing.assert_array_equal(model.predict([x[:40], x[40:]]), whole)
    np.testing.assert_array_equal(model.predict(x, batch_size=8), whole)
    with pytest.raises(DataError, match="batch 1 of the iterable.*has shape"):
        model.predict([x[:4], x[:4, :, :4]])
    with pytest.raises(DataError, match="no batches"):
        model.predict(iter([]))
    with pytest.raises(UsageError, match="planned for batches of 16"):
        model.predict(x, batch_size=32)


def test_evaluate_takes_pairs_and_iterables_of_batches(graph, data):
    x, y = data
    model = _model(graph)
    model.fit((x, y), epochs=1, verbose=0)
    whole = model.evaluate((x, y))
    batched = model.evaluate((x[i:i + 20], y[i:i + 20]) for i in range(0, 64, 20))
    assert (batched.loss, batched.accuracy) == (whole.loss, whole.accuracy)
    np.testing.assert_array_equal(batched.predictions, whole.predictions)
    with pytest.raises(DataError, match=r"\(batch 1\)'s y .*outside 0..3"):
        model.evaluate([(x[:4], y[:4]), (x[:4], y[:4] + 4)])
    with pytest.raises(UsageError, match="Dataset or an"):
        model.evaluate(42)


def test_resume_refuses_another_shuffle(graph, data, tmp_path):
    """The batch position of a shuffle=False run counts other batches than a shuffled one."""
    model = _model(graph)
    model.fit(data, epochs=1, shuffle=False, verbose=0, checkpoint_dir=tmp_path)
    with pytest.raises(UsageError, match="shuffle=False, this run has shuffle=True"):
        _model(graph).fit(data, epochs=2, verbose=0, checkpoint_dir=tmp_path, resume=True)
    resumed = _model(graph).fit(data, epochs=2, shuffle=False, verbose=0,
                                checkpoint_dir=tmp_path, resume=True)
    assert resumed.epoch == [2]


_TERMINAL_FIT = '''
import numpy as np, convgraph
rng = np.random.default_rng(0)
x, y = rng.integers(0, 255, (64, 1, 8, 8)).astype(np.uint8), rng.integers(0, 4, 64)
convgraph.Model(convgraph.analyse({spec!r})).fit((x, y), epochs=2, verbose={verbose})
'''


def _on_a_terminal(code: str) -> tuple[int, str]:
    """Run ``code`` in a Python process whose output is a pseudo-terminal; (status, output)."""
    import sys

    from .terminal import on_a_terminal

    return on_a_terminal([sys.executable, "-c", code], 120, {"TERM": "xterm"}, timeout=120)


def test_fit_draws_run_s_progress_bar_on_a_terminal():
    status, out = _on_a_terminal(_TERMINAL_FIT.format(spec=SPEC, verbose=1))
    assert status == 0, out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "4/4" in out, out  # the bar
    assert "epoch 2: train loss" in out, out
    status, out = _on_a_terminal(_TERMINAL_FIT.format(spec=SPEC, verbose=0))
    assert status == 0 and out == "", out
