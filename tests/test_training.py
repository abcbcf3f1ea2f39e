"""Training as a whole: a device step against the same step in numpy, determinism, resume,
checkpoints, divergence, schedules and the `run` / `eval` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convgraph.data import Dataset
from convgraph.errors import DataError, TrainingDiverged
from convgraph.pipeline import analyse
from convgraph.reference import reference_gradients
from convgraph.train.checkpoint import load_checkpoint, network_hash, save_checkpoint
from convgraph.train.loop import Interrupted, Trainer
from convgraph.train.schedule import learning_rate
from convgraph.train.session import TrainingSession
from convgraph.verify import relative_error, verify_training_locally

from .conftest import SPECS, tiny_images

pytestmark = [pytest.mark.device, pytest.mark.timeout(300)]

# conv, batchnorm, relu, pool, add and concat: the graph the issue asks a numpy step of
SMALL = {
    "name": "small",
    "input": "9x7x3",
    "nodes": {
        "conv": {"op": "conv", "filters": 6, "size": 3, "pad": 1, "inputs": ["input"]},
        "bn": {"op": "batchnorm"},
        "relu": "relu",
        "side": {"op": "conv", "filters": 6, "size": 1, "inputs": ["input"]},
        "sum": {"op": "add", "inputs": ["relu", "side"]},
        "both": {"op": "concat", "inputs": ["sum", "conv"]},
        "pool": {"op": "pool", "size": 2, "rounding": "floor"},
        "fc": {"op": "fc", "units": 4},
    },
}


def _random_params(session, rng):
    params = session.params
    for key, value in params.items():
        if key.endswith("running_var"):
            params[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif key.endswith(("bias", "running_mean")) or value.ndim == 1:
            params[key] = rng.normal(0.0, 0.5, value.shape).astype(np.float32)
    return params


def _batch(graph, rng, count):
    volume = graph.nodes["input"]["output"]
    x = rng.normal(size=(count, volume.depth, volume.height, volume.width)).astype(np.float32)
    classes = graph.nodes[graph.graph["output"]]["output"].depth
    return x, rng.integers(0, classes, count)


def _numpy_sgd(params, grads, velocity, lr, momentum, nesterov, decay):
    updated = dict(params)
    for key, grad in grads.items():
        g = grad + decay * params[key]
        velocity[key] = momentum * velocity.get(key, 0.0) + g
        updated[key] = params[key] - lr * (g + momentum * velocity[key] if nesterov
                                           else velocity[key])
    return updated


def _numpy_adam(params, grads, moments, step, lr, betas, decay, decoupled):
    updated = dict(params)
    beta1, beta2 = betas
    for key, grad in grads.items():
        weight = params[key]
        if decoupled:
            weight = weight - lr * decay * weight
        else:
            grad = grad + decay * weight
        first, second = moments.get(key, (0.0, 0.0))
        first = beta1 * first + (1 - beta1) * grad
        second = beta2 * second + (1 - beta2) * grad * grad
        moments[key] = (first, second)
        updated[key] = weight - lr * (first / (1 - beta1 ** step)) / (
            np.sqrt(second / (1 - beta2 ** step)) + 1e-8)
    return updated


@pytest.mark.parametrize(("optimizer", "extra"), [
    ("sgd", ["momentum=0.9", "weight_decay=0.01"]),
    ("sgd", ["momentum=0.9", "nesterov=true"]),
    ("adam", ["weight_decay=0.001"]),
    ("adamw", ["weight_decay=0.1"]),
])
@pytest.mark.parametrize("batch", [1, 5])
def test_training_steps_match_numpy(optimizer, extra, batch):
    """Two full steps (forward, loss, backward, update) on the device against numpy float64."""
    graph = analyse(SMALL, [f"optimizer={optimizer}", "label_smoothing=0.1", *extra])
    train = graph.graph["train"]
    session = TrainingSession(graph, batch=batch)
    rng = np.random.default_rng(batch)
    params = {k: v.astype(np.float64) for k, v in _random_params(session, rng).items()}
    session.set_params(params)
    state: dict = {}
    trainable = {f"{n}.{k}" for n, k in session.plan.trainable}
    for step in (1, 2):
        x, y = _batch(graph, rng, batch)
        lr = 0.05
        losses, correct, _, _, grads = reference_gradients(graph, params, x, y, 0, 0.1)
        result = session.step(x, y, lr)
        assert result.loss == pytest.approx(losses.sum(), rel=1e-4)
        assert result.correct == correct.sum()
        grads = {k: v for k, v in grads.items() if k in trainable}
        if optimizer == "sgd":
            updated = _numpy_sgd(params, grads, state, lr, train["momentum"], train["nesterov"],
                                 train["weight_decay"])
        else:
            updated = _numpy_adam(params, grads, state, step, lr, train["betas"],
                                  train["weight_decay"], optimizer == "adamw")
        for node in ("bn",):  # running statistics move as PyTorch moves them
            from convgraph.ops.base import REGISTRY
            from convgraph.reference import node_params

            data = graph.nodes[node]
            inputs = [reference_gradients(graph, params, x, y)[2][data["inputs"][0]]]
            moved = REGISTRY["batchnorm"].reference_running_stats(
                data, inputs, node_params(params, node))
            updated.update({f"{node}.{k}": v for k, v in moved.items()})
        params = updated
        device = session.params
        for key, value in params.items():
            assert relative_error(device[key], value) < 1e-4, (step, key)


# every op's backward kernels, in the variants the examples lack
EVERY_OP = {
    "input": "11x9x4",
    "pattern": "[INPUT-CONV(6, 3, stride=2, pad=1, groups=2)-LEAKYRELU(0.1)"
               "-CONV(6, 3, pad=same, groups=depthwise)-SIGMOID-CONV(8, 3, dilation=2, pad=2)-TANH"
               "-AVGPOOL(3, 2, pad=1, count_pad=true, rounding=ceil)"
               "-CONV(16, 1, groups=depthwise)-GAP-FC(5)-SOFTMAX]",
}
POOLS = {  # windows that tile the input exactly (pool.cl POOL_BACKWARD_WINDOWS), max with
    # the ties ReLU's zeros make (the first maximum in scan order takes the gradient); each
    # differentiates the activation fused into the conv before it (GATE), avg and max
    "input": "12x12x5",
    "pattern": "[INPUT-CONV(6, 3, pad=1)-TANH-AVGPOOL(2)-CONV(8, 3, pad=1)-RELU-POOL(3)-FC(3)]",
}
BRANCHES = {
    "input": "10x9x3",
    "nodes": {
        "a": {"op": "conv", "filters": 4, "size": "5x3", "pad": "2x1", "inputs": ["input"]},
        "b": {"op": "pool", "size": 3, "stride": 1, "pad": 1, "inputs": ["input"]},
        "c": {"op": "conv", "filters": 3, "size": 1, "bias": False, "inputs": ["input"]},
        "s": {"op": "softmax", "inputs": ["c"]},
        "cat": {"op": "concat", "inputs": ["a", "b", "s"]},
        "sum": {"op": "add", "inputs": ["cat", "cat"]},
        "m": {"op": "pool", "size": 3, "stride": 2, "rounding": "ceil"},
        "f": "flatten",
        "r": "relu",
        "d": {"op": "dropout", "rate": 0.3},
        "o": {"op": "fc", "units": 4},
    },
}


def test_a_step_at_a_realistic_batch():
    """Batch 64 of ResNet-8 (every kernel kind, strided gathers included): a too-large private
    tile once crashed PoCL here only at such batches, never at the tests' small ones."""
    graph = analyse(SPECS / "resnet8.yaml")
    session = TrainingSession(graph, batch=64)
    x, y = _batch(graph, np.random.default_rng(0), 64)
    first = session.step(x, y, 0.01)
    second = session.step(x, y, 0.01)
    assert np.isfinite(first.loss) and second.loss < first.loss


# LeNet-5, the plain Fashion convnet and VGG-CIFAR in the slow tier (CI's time): their kernel
# families are the BN convnet's and ResNet-8's (direct, row sweeps, fused Winograd), which stay
# in the default tier
@pytest.mark.parametrize("name", [
    "seed", pytest.param("lenet5", marks=pytest.mark.slow),
    pytest.param("fashion_convnet", marks=pytest.mark.slow), "fashion_convnet_bn",
    pytest.param("vgg_cifar", marks=pytest.mark.slow), "resnet8", "every_op", "branches",
    "pools"])
def test_device_gradients_of_the_example_networks(name):
    """Every layer's output gradient and every parameter gradient of one training step."""
    given = {"every_op": EVERY_OP, "branches": BRANCHES, "pools": POOLS}
    graph = analyse(given.get(name, SPECS / f"{name}.yaml"))
    session = TrainingSession(graph, batch=3)
    rng = np.random.default_rng(3)
    params = _random_params(session, rng)
    session.set_params(params)
    x, y = _batch(graph, rng, 3)
    grads, param_grads = session.gradients(x, y)
    _, _, _, expected, expected_params = reference_gradients(
        graph, params, x, y, session.dropout_seed(), graph.graph["train"]["label_smoothing"])
    for node, grad in grads.items():
        assert relative_error(grad, expected[node]) < 1e-4, node
    for key, grad in param_grads.items():
        assert relative_error(grad, expected_params[key]) < 1e-4, key


@pytest.mark.parametrize("pool", ["POOL(2)", "POOL(3)", "POOL(3, 2, pad=1, rounding=ceil)"])
def test_max_pool_ties_pass_the_gradient_to_the_first_maximum(pool):
    """Integer images and weights make equal values in most windows; the gradient must go to
    the first maximum in scan order (as PyTorch), by the window kernel (2x2 and 3x3 tiling 12x12)
    and by the gather (overlapping windows) alike."""
    graph = analyse({"input": "12x12x2", "pattern": f"[INPUT-CONV(4, 1, bias=false)-{pool}-FC(3)]"})
    session = TrainingSession(graph, batch=2)
    rng = np.random.default_rng(7)
    params = session.params
    params["conv1.weight"] = rng.integers(0, 2, params["conv1.weight"].shape).astype(np.float32)
    session.set_params(params)
    x = rng.integers(0, 3, (2, 2, 12, 12)).astype(np.float32)
    y = np.array([0, 2])
    grads, _ = session.gradients(x, y)
    *_, expected, _ = reference_gradients(graph, params, x, y, session.dropout_seed(), 0.0)
    assert relative_error(grads["conv1"], expected["conv1"]) < 1e-5


# ---------------------------------------------------------------------------- the loop

def _tiny_data(seed=0, count=96, classes=4):
    x, labels = tiny_images(seed, count, classes)
    return Dataset("tiny", x, labels.astype(np.int64), classes)


TINY = {"name": "tiny", "input": "8x8x1",
        "pattern": "[INPUT-CONV(4, 3, pad=1)-BN-RELU-POOL-DROPOUT(0.2)-FC(4)]",
        "train": {"epochs": 3, "batch": 16, "lr": 0.05, "seed": 5}}


def _trainer(tmp_path=None, **kwargs):
    graph = analyse(TINY)
    session = TrainingSession(graph, batch=16)
    return Trainer(session, _tiny_data(), _tiny_data(1, 32),
                   checkpoint_dir=tmp_path / "ck" if tmp_path else None, **kwargs)


def test_training_learns_and_is_deterministic():
    first, second = _trainer(), _trainer()
    records = first.fit()
    second.fit()
    assert records[-1].train_accuracy > 0.6 and records[-1].test_accuracy > 0.6
    assert records[-1].train_loss < records[0].train_loss
    for key, value in first.session.params.items():
        np.testing.assert_array_equal(value, second.session.params[key])


def test_resume_after_an_interruption_gives_the_same_weights(tmp_path):
    straight = _trainer()
    straight.fit()
    broken = _trainer(tmp_path)

    def stop_mid_epoch(done, total, *_):
        if broken.progress.epoch == 1 and done == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        broken.fit(on_batch=stop_mid_epoch)
    resumed = _trainer(tmp_path)
    assert resumed.resume()
    assert (resumed.progress.epoch, resumed.progress.batch) == (1, 2)
    resumed.fit()
    for key, value in straight.session.params.items():
        np.testing.assert_array_equal(value, resumed.session.params[key])
    assert len(resumed.progress.history) == 3


def test_checkpoints_keep_last_and_best(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.fit(epochs=2)
    params, optimizer, header = load_checkpoint(tmp_path / "ck" / "last.npz",
                                                network_hash(trainer.graph))
    assert header["epoch"] == 2 and header["step"] == 2 * 6
    assert set(params) == set(trainer.session.params)
    assert any(key.endswith("/0") for key in optimizer)
    best = load_checkpoint(tmp_path / "ck" / "best.npz")[2]
    assert best["best_accuracy"] == max(r["test_accuracy"] for r in header["history"])


def test_corrupt_truncated_and_foreign_checkpoints_are_refused(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.fit(epochs=1)
    last = tmp_path / "ck" / "last.npz"
    data = bytearray(last.read_bytes())
    flipped = tmp_path / "flipped.npz"
    data[len(data) // 2] ^= 0x10
    flipped.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum|corrupt"):
        load_checkpoint(flipped)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_checkpoint(truncated)
    other = analyse({**TINY, "pattern": "[INPUT-CONV(5, 3, pad=1)-RELU-POOL-FC(4)]"})
    with pytest.raises(DataError, match="different network"):
        load_checkpoint(last, network_hash(other))
    assert load_checkpoint(last)[2]["epoch"] == 1  # the good one is still usable


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    save_checkpoint(path, {"a.weight": np.ones(3)}, {}, {"epoch": 1})

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError):
        save_checkpoint(path, {"a.weight": np.zeros(3)}, {}, {"epoch": 2})
    monkeypatch.undo()
    params, _, header = load_checkpoint(path)
    assert header["epoch"] == 1 and params["a.weight"].tolist() == [1, 1, 1]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_a_diverging_loss_stops_with_the_layer(tmp_path):
    graph = analyse({**TINY, "pattern": "[INPUT-CONV(4, 3, pad=1)-RELU-FC(16)-RELU-FC(4)]"})
    session = TrainingSession(graph, batch=16)
    trainer = Trainer(session, _tiny_data(), None, checkpoint_dir=tmp_path / "ck")
    trainer.fit(epochs=1)
    good = load_checkpoint(tmp_path / "ck" / "last.npz")[0]
    params = session.params
    params["fc1.weight"] = np.full_like(params["fc1.weight"], 3e38)  # finite, overflows at once
    session.set_params(params)
    with pytest.raises(TrainingDiverged) as caught:
        trainer.fit(epochs=2)
    assert "output of layer 'fc1'" in str(caught.value) and "--lr" in str(caught.value)
    kept = load_checkpoint(tmp_path / "ck" / "last.npz")[0]  # the last good one stays
    for key, value in good.items():
        np.testing.assert_array_equal(value, kept[key])


@pytest.mark.parametrize(("settings", "epoch", "step", "expected"), [
    ({"schedule": "constant"}, 3, 5, 0.1),
    ({"schedule": "step", "step_epochs": 2, "gamma": 0.1}, 3, 0, 0.01),
    ({"schedule": "cosine"}, 5, 0, 0.05),
    ({"schedule": "cosine"}, 10, 0, 0.0),
    ({"schedule": "constant", "warmup_epochs": 2}, 0, 0, 0.01),
    ({"schedule": "constant", "warmup_epochs": 2}, 1, 0, 0.055),
])
def test_learning_rate_schedules(settings, epoch, step, expected):
    train = {"lr": 0.1, "epochs": 10, "warmup_epochs": 0, "step_epochs": 10, "gamma": 0.1,
             **settings}
    assert learning_rate(train, epoch, step, 10) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------- the commands

def test_run_trains_and_eval_reports(cli, tmp_path):
    metrics = tmp_path / "m.jsonl"
    status, out, err = cli("run", SPECS / "seed.yaml", "--epochs", "2", "--limit", "640",
                           "--checkpoint-dir", tmp_path / "ck", "--metrics", metrics,
                           "--save", tmp_path / "w.npz")
    assert status == 0, err
    assert "epoch 2:" in out and "final test accuracy" in out
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
            "images_per_s", "seconds"} <= set(lines[0])
    status, out, err = cli("eval", SPECS / "seed.yaml", "--weights", tmp_path / "ck" / "last.npz",
                           "--confusion")
    assert status == 0, err
    assert f"test accuracy {lines[-1]['test_accuracy']:.4f}" in out
    assert "confusion matrix" in out
    status, out, _ = cli("run", SPECS / "seed.yaml", "--weights", tmp_path / "w.npz",
                         "--verify")
    assert status == 0 and "d conv1.weight" in out and ", 0 failed" in out


def test_run_refuses_data_that_does_not_fit(cli, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 28, 28), np.uint8), y=np.zeros(4, np.int64))
    status, _, err = cli("run", SPECS / "seed.yaml", "--dataset", "npz", "--data",
                         tmp_path / "d.npz", "--epochs", "1")
    assert status == 5 and "32x32x3" in err and "Traceback" not in err


def test_run_plot(cli, tmp_path):
    pytest.importorskip("matplotlib")
    status, _, err = cli("run", SPECS / "seed.yaml", "--epochs", "1", "--limit", "256",
                         "--plot", tmp_path / "curves.png")
    assert status == 0, err
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_one_training_step_of_the_imagenet_networks(name):
    """VGG-16 and ResNet-18 train too (their data is an image folder): every layer's backward
    kernels of one step at batch 1, checked layer by layer from the device's own activations and
    output gradients (rounding compounds through 16+ layers, so a whole-network comparison
    would test float32, not the kernels). Slow: about 40 s of float64 numpy each."""
    graph = analyse(SPECS / f"{name}.yaml")
    session = TrainingSession(graph, batch=1)
    rng = np.random.default_rng(4)
    session.set_params(_random_params(session, rng))
    x, y = _batch(graph, rng, 1)
    checks = verify_training_locally(session, x, y)
    assert len(checks) > 20
    for check in checks:
        # the first layers' weight gradients sum 112 * 112 or 224 * 224 float32 products
        assert check.error < 1e-3, (check.node, check.error)


SAVER = """
import sys, numpy as np
from convgraph.train.checkpoint import save_checkpoint
path, n = sys.argv[1], 0
print("ready", flush=True)
while True:  # save forever, each time with other values; the parent kills us mid-save
    n += 1
    save_checkpoint(path, {"a.weight": np.full(2_000_000, n, np.float32)}, {}, {"epoch": n})
"""


def test_a_kill_during_saving_leaves_a_whole_checkpoint(tmp_path):
    """SIGKILL at random moments while a checkpoint is being rewritten: what is on disk always
    loads (old or new, never half), and no temporary file is mistaken for it."""
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "last.npz"
    save_checkpoint(path, {"a.weight": np.zeros(2_000_000, np.float32)}, {}, {"epoch": 0})
    rng = np.random.default_rng(0)
    for _ in range(5):
        child = subprocess.Popen([sys.executable, "-c", SAVER, str(path)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        params, _, header = load_checkpoint(path)
        assert params["a.weight"].min() == params["a.weight"].max() == header["epoch"]
    save_checkpoint(path, {"a.weight": np.ones(3, np.float32)}, {}, {"epoch": 9})
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]  # killed saves' leftovers gone


def test_sigkill_then_resume_gives_the_same_weights(tmp_path):
    """`convgraph run` killed with SIGKILL at random moments (mid-epoch, mid-save) and resumed
    each time ends with bitwise the same weights as a run that was never interrupted."""
    import signal
    import subprocess
    import sys
    import time

    data = _tiny_data(count=1600)
    test = _tiny_data(1, 32)
    np.savez(tmp_path / "d.npz", x=data.x, y=data.y, x_test=test.x, y_test=test.y)
    spec = tmp_path / "tiny.yaml"
    spec.write_text('input: 8x8x1\npattern: "[INPUT-CONV(4, 3, pad=1)-BN-RELU-POOL-DROPOUT(0.2)'
                    '-FC(4)]"\ntrain: {epochs: 20, batch: 16, lr: 0.05, seed: 5, dataset: npz}\n')

    def run(folder, extra=()):
        return [sys.executable, "-m", "convgraph.cli", "run", str(spec), "--data",
                str(tmp_path / "d.npz"), "--checkpoint-dir", str(folder), *extra]

    subprocess.run(run(tmp_path / "straight", ["--save", str(tmp_path / "straight.npz")]),
                   check=True, capture_output=True, timeout=300)
    rng = np.random.default_rng(3)
    last = tmp_path / "killed" / "last.npz"

    def epoch_saved():
        try:
            return load_checkpoint(last)[2]["epoch"]
        except DataError:  # not there yet (a half-written file is never at this name)
            return 0

    reached = []
    for _ in range(3):  # run until a new epoch is saved, kill a moment later, resume, ...
        before = epoch_saved()
        child = subprocess.Popen(run(tmp_path / "killed", ["--resume"]),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while epoch_saved() == before and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.05))  # mid-epoch, or mid-save
        child.send_signal(signal.SIGKILL)
        child.wait()
        reached.append(epoch_saved())
    assert 0 < reached[0] < reached[-1] < 20, reached  # each kill landed during training
    done = subprocess.run(run(tmp_path / "killed", ["--resume", "--save",
                                                   str(tmp_path / "resumed.npz")]),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    straight = load_checkpoint(tmp_path / "straight.npz")[0]
    resumed = load_checkpoint(tmp_path / "resumed.npz")[0]
    for key, value in straight.items():
        np.testing.assert_array_equal(value, resumed[key])


def test_verify_judges_a_gradient_that_is_zero_by_construction_against_its_layer():
    """A conv's bias before a batchnorm has a zero gradient (batchnorm removes every constant
    shift): float32 rounding noise over a float64 zero read as an error of 1e9 and --verify
    failed a correct kernel. It is judged against its layer's largest gradient now; a wrong
    bias gradient still fails."""
    from convgraph.verify import verify_training

    graph = analyse({"name": "cbn", "input": "8x8x3", "train": {"batch": 4},
                     "pattern": "[INPUT-CONV(8, 3, pad=1)-BN-RELU-FC(5)]"})
    checks = {check.node: check for check in verify_training(graph)}
    assert checks["d conv1.bias"].passed and checks["d conv1.bias"].error < 1e-4
    assert relative_error(np.full(4, 1e-3), np.zeros(4), floor=1.0) == pytest.approx(1e-3)
    assert relative_error(np.full(4, 0.5), np.zeros(4), floor=1.0) > 1e-4  # still fails
