"""Per-pixel training (segmentation): the loss against its float64 definition and finite
differences, the device kernels against it, masks through the data path, the metrics, and the
command line and the Python API on the shapes set (tests/specs/tiny_segnet.yaml)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convgraph
from convgraph.core import Volume
from convgraph.data import Dataset, batches
from convgraph.data.masks import confusion, mean_iou
from convgraph.data.shapes import load_shapes
from convgraph.errors import DataError, UsageError
from convgraph.pipeline import analyse
from convgraph.reference import pixel_cross_entropy, reference_gradients
from convgraph.train.session import TrainingSession

SPEC = Path(__file__).parent / "specs" / "tiny_segnet.yaml"
IGNORE = 255


def head(volume: str, classes: int, smoothing: float = 0.0, **train) -> dict:
    """The smallest per-pixel network: one 1x1 conv from the input to a score per class."""
    return {"name": "pixel-head", "input": volume,
            "nodes": {"scores": {"op": "conv", "filters": classes, "size": 1,
                                 "inputs": ["input"]}},
            "train": {"label_smoothing": smoothing, "optimizer": "sgd", "momentum": 0.0,
                      **train}}


def random_masks(rng, shape, classes, ignored=0.2):
    masks = rng.integers(0, classes, shape)
    masks[rng.random(shape) < ignored] = IGNORE
    return masks


def mean_loss(logits, masks, smoothing):
    losses, _, counted, _ = pixel_cross_entropy(logits, masks, smoothing, IGNORE)
    return losses.sum() / max(counted.sum(), 1)


# ---------------------------------------------------------------------------- the reference

@pytest.mark.parametrize(("shape", "smoothing"), [((1, 3, 5, 3), 0.0), ((2, 4, 3, 7), 0.1),
                                                  ((3, 2, 1, 4), 0.25)])
def test_pixel_loss_gradient_matches_finite_differences(shape, smoothing):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=shape)
    masks = random_masks(rng, (shape[0], *shape[2:]), shape[1])
    _, _, _, grad = pixel_cross_entropy(logits, masks, smoothing, IGNORE)
    numeric = np.zeros_like(logits)
    step = 1e-6
    for index in np.ndindex(*logits.shape):
        up, down = logits.copy(), logits.copy()
        up[index] += step
        down[index] -= step
        numeric[index] = (mean_loss(up, masks, smoothing)
                          - mean_loss(down, masks, smoothing)) / (2 * step)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


def test_pixel_loss_is_the_mean_over_counted_pixels_of_the_classification_loss():
    """PyTorch's definition: each counted pixel's loss is the classification loss of its
    scores; the batch's loss their mean; ignored pixels change nothing."""
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 4, 5))
    masks = random_masks(rng, (2, 4, 5), 3, ignored=0.3)
    losses, correct, counted, grad = pixel_cross_entropy(logits, masks, 0.1, IGNORE)
    pixels = np.moveaxis(logits, 1, -1)[masks != IGNORE]  # (counted, C)
    labels = masks[masks != IGNORE]
    log_p = pixels - pixels.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    target = np.full(pixels.shape, 0.1 / 3)
    target[np.arange(len(labels)), labels] += 0.9
    assert losses.sum() / counted.sum() == pytest.approx(-(target * log_p).sum(1).mean())
    assert correct.sum() == (pixels.argmax(1) == labels).sum()
    assert counted.sum() == len(labels)
    assert np.all(np.moveaxis(grad, 1, -1)[masks == IGNORE] == 0)
    changed = logits.copy()
    changed[:, :, masks[0] == IGNORE] += 5.0  # scores of ignored pixels (of image 0) move
    moved = pixel_cross_entropy(changed, masks, 0.1, IGNORE)
    assert moved[0][1] == pytest.approx(losses[1])


def test_a_batch_with_every_pixel_ignored_has_zero_loss_and_gradient():
    logits = np.ones((1, 3, 2, 2))
    losses, correct, counted, grad = pixel_cross_entropy(logits, np.full((1, 2, 2), IGNORE))
    assert losses.sum() == correct.sum() == counted.sum() == 0 and not grad.any()


def test_mean_iou_over_the_classes_present():
    labels = np.array([[0, 0, 1, 1], [2, 2, IGNORE, 0]])
    predicted = np.array([[0, 1, 1, 1], [2, 0, 3, 0]])
    matrix = confusion(labels, predicted, 4, IGNORE)  # class 3 is neither labelled nor predicted
    assert matrix.sum() == 7 and np.trace(matrix) == 5
    # IoU: class 0 2/4, class 1 2/3, class 2 1/2
    assert mean_iou(matrix) == pytest.approx((2 / 4 + 2 / 3 + 1 / 2) / 3)


# ---------------------------------------------------------------------------- the device kernels

@pytest.mark.parametrize(("volume", "batch", "smoothing", "ignored"), [
    ("5x3x2", 1, 0.0, 0.2), ("3x7x3", 3, 0.1, 0.3), ("4x4x1", 2, 0.0, 1.0)])
def test_device_loss_and_gradient_match_the_reference(volume, batch, smoothing, ignored):
    graph = analyse(head(volume, 5, smoothing))
    session = TrainingSession(graph, batch=batch)
    rng = np.random.default_rng(3)
    width, height, depth = (int(v) for v in volume.split("x"))
    x = rng.normal(size=(batch, depth, height, width)).astype(np.float32)
    masks = random_masks(rng, (batch, height, width), 5, ignored)
    params = {key: rng.normal(size=value.shape).astype(np.float32)
              for key, value in session.params.items()}
    session.set_params(params)
    result = session.evaluate_batch(x, masks)
    losses, correct, values, grads, param_grads = reference_gradients(
        graph, params, x, masks, 0, smoothing, IGNORE)
    counted = int((masks != IGNORE).sum())
    assert result.units == counted and result.count == batch
    assert result.loss == pytest.approx(losses.sum(), rel=1e-5, abs=1e-5)
    assert result.correct == correct.sum()
    device_grads, device_param_grads = session.gradients(x, masks)
    np.testing.assert_allclose(device_grads["scores"], grads["scores"], atol=1e-6)
    for key, value in device_param_grads.items():
        np.testing.assert_allclose(value, param_grads[key], atol=1e-5)


def test_one_sgd_step_matches_numpy():
    graph = analyse(head("6x5x3", 4, 0.1, lr=0.5))
    session = TrainingSession(graph, batch=2)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)
    masks = random_masks(rng, (2, 5, 6), 4)
    before = session.params
    *_, param_grads = reference_gradients(graph, before, x, masks, 0, 0.1, IGNORE)
    session.step(x, masks, lr=0.5)
    for key, value in session.params.items():
        np.testing.assert_allclose(value, before[key] - 0.5 * param_grads[key], atol=1e-5)


@pytest.mark.slow  # 7 s cold (its kernels' first compile); the tiny U-Net of
# tests/test_encoder_decoder.py runs the same check through run --verify in the default tier
def test_the_tiny_segnet_verifies_through_the_whole_network():
    """--verify's training check: every layer's gradients of one step, masks with ignored
    pixels, against the float64 network (deconv, upsample and concat in the path)."""
    from convgraph.verify import verify_training

    checks = verify_training(analyse(SPEC), batch=2)
    assert len(checks) >= 15 and all(check.passed for check in checks), [
        (check.node, check.error) for check in checks if not check.passed]


def test_masks_that_do_not_fit_the_output_are_refused_by_the_session():
    session = TrainingSession(analyse(head("4x3x1", 3)), batch=2)
    x = np.zeros((2, 1, 3, 4), np.float32)
    with pytest.raises(DataError, match=r"masks must be \(N, H, W\) = \(2, 3, 4\)"):
        session.step(x, np.zeros((2, 4, 3), np.int64), 0.1)
    with pytest.raises(DataError, match="or be the ignore label 255, got 3"):
        session.step(x, np.full((2, 3, 4), 3), 0.1)


# ---------------------------------------------------------------------------- the data path

def test_crop_and_flip_move_the_mask_with_the_image():
    """Each image's pixel values encode their mask, so any crop or flip that treated them apart
    would show; the padding of a crop is the ignore label in the mask, zero in the image."""
    rng = np.random.default_rng(5)
    masks = rng.integers(0, 4, (16, 5, 7)).astype(np.uint8)
    x = (masks[:, None] + 1).astype(np.float32)  # 1..4: never the padding's 0
    data = Dataset("coded", x, masks, 4)
    seen_padding = seen_flip = False
    for images, labels in batches(data, 8, seed=1, epoch=0, crop_pad=2, flip=True,
                                  ignore_label=IGNORE):
        assert labels.shape == (len(images), 5, 7) and labels.dtype == np.int32
        padded = images[:, 0] == 0
        assert np.array_equal(labels == IGNORE, padded)
        np.testing.assert_array_equal(labels[~padded], images[:, 0][~padded] - 1)
        seen_padding |= padded.any()
        seen_flip |= any(not np.array_equal(lab, m) for lab, m in zip(labels, masks))
    assert seen_padding and seen_flip


def test_the_shapes_set_is_deterministic_quick_and_segmentation_shaped():
    first = load_shapes("train", Volume(20, 16, 3), 5)
    again = load_shapes("train", Volume(20, 16, 3), 5)
    test = load_shapes("test", Volume(20, 16, 3), 5)
    assert first.x.shape == (512, 3, 16, 20) and first.y.shape == (512, 16, 20)
    assert np.array_equal(first.x, again.x) and np.array_equal(first.y, again.y)
    assert not np.array_equal(first.y[:128], test.y)
    assert set(np.unique(first.y)) == {0, 1, 2, 3, 4}
    assert first.class_names == ["background", "disc", "square", "triangle", "ring"]
    with pytest.raises(DataError, match="2 to 6 classes"):
        load_shapes("train", Volume(20, 16, 3), 7)


def npz_masks(tmp_path, masks, name="masks.npz", key="masks"):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (len(masks), 3, 12, 12), dtype=np.uint8)
    path = tmp_path / name
    np.savez(path, x=x, x_test=x, **{key: masks, f"{key}_test": masks})
    return path


def cli(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convgraph.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.parametrize(("masks", "phrases"), [
    (np.zeros((8, 10, 12), np.uint8), ("the masks have shape 8x10x12", "should be (N, 12, 12)")),
    (np.full((8, 12, 12), 7, np.int16), ("mask value 7 (image 0, row 0, column 0)",
                                         "nor the ignore label 255")),
    (np.zeros(8, np.int64), ("holds one label per image", "needs (N, height, width) masks")),
])
def test_masks_that_do_not_fit_are_refused_through_the_cli(tmp_path, masks, phrases):
    key = "y" if masks.ndim == 1 else "masks"
    path = npz_masks(tmp_path, masks, key=key)
    done = cli(tmp_path, "run", SPEC, "--dataset", "npz", "--data", path, "--epochs", 1)
    assert done.returncode == 5, done.stderr
    assert "Traceback" not in done.stderr and "Fix:" in done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


def test_npz_masks_with_ignored_pixels_train(tmp_path):
    masks = np.random.default_rng(7).integers(0, 4, (8, 12, 12)).astype(np.uint8)
    masks[:, :2] = IGNORE
    path = npz_masks(tmp_path, masks, key="y")
    done = cli(tmp_path, "run", SPEC, "--dataset", "npz", "--data", path, "--epochs", 1,
               "--metrics", "m.jsonl")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "m.jsonl").read_text())
    assert np.isfinite(record["train_loss"]) and 0 <= record["test_miou"] <= 1


# ---------------------------------------------------------------------------- run, eval, resume

def test_run_on_the_shapes_set_learns_then_eval_and_predict(tmp_path):
    done = cli(tmp_path, "run", SPEC, "--epochs", 3, "--checkpoint-dir", "ck", "--metrics",
               "m.jsonl")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[2]["test_miou"] > records[0]["test_miou"] + 0.1
    assert records[2]["train_miou"] > records[0]["train_miou"]
    assert "test mIoU" in done.stdout and "pixel accuracy" in done.stdout
    evaluated = cli(tmp_path, "eval", SPEC, "--weights", "ck/last.npz", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    figures = json.loads(evaluated.stdout)
    assert figures["miou"] == pytest.approx(records[2]["test_miou"], abs=1e-6)
    assert figures["pixel_accuracy"] == pytest.approx(records[2]["test_accuracy"], abs=1e-6)
    assert figures["counted_pixels"] == 128 * 12 * 12
    np.savez(tmp_path / "in.npz", x=load_shapes("test", Volume(12, 12, 3), 4).x[:2])
    predicted = cli(tmp_path, "run", SPEC, "--predict", "in.npz", "--weights", "ck/last.npz",
                    "--output", "scores.npy")
    assert predicted.returncode == 0, predicted.stderr
    assert "0: background" in predicted.stdout
    assert np.load(tmp_path / "scores.npy").shape == (2, 4, 12, 12)


@pytest.mark.slow  # matplotlib draws the curves: seconds
def test_the_run_report_shows_the_mean_iou_and_a_pixel_confusion_matrix(tmp_path):
    done = cli(tmp_path, "run", SPEC, "--epochs", 1, "--report", "run.html")
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "run.html").read_text()
    assert "test mIoU" in page and "train mIoU" in page
    assert "of 18,432 counted test pixels right" in page


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    whole = cli(tmp_path, "run", SPEC, "--epochs", 3, "--metrics", "whole.jsonl")
    part = cli(tmp_path, "run", SPEC, "--epochs", 2, "--checkpoint-dir", "ck")
    rest = cli(tmp_path, "run", SPEC, "--epochs", 3, "--checkpoint-dir", "ck", "--resume",
               "--metrics", "rest.jsonl")
    assert whole.returncode == part.returncode == rest.returncode == 0, rest.stderr
    last = json.loads((tmp_path / "whole.jsonl").read_text().splitlines()[-1])
    resumed = json.loads((tmp_path / "rest.jsonl").read_text())
    for key in ("train_loss", "train_accuracy", "train_miou", "test_loss", "test_miou"):
        assert resumed[key] == pytest.approx(last[key], abs=1e-6), key


# ---------------------------------------------------------------------------- the Python API

def test_fit_on_mask_arrays_with_early_stopping_on_val_miou():
    model = convgraph.compile(str(SPEC))
    train = load_shapes("train", Volume(12, 12, 3), 4)
    stop = convgraph.callbacks.EarlyStopping("val_miou", patience=1)
    history = model.fit((train.x[:256], train.y[:256]), epochs=3, validation_split=0.25,
                        callbacks=[stop], verbose=0)
    assert "test_miou" in history.history and "train_miou" in history.history
    assert len(history) >= 2 and stop.monitor.mode == "max"
    scores = model.predict(train.x[:3])
    assert scores.shape == (3, 4, 12, 12)
    result = model.evaluate((train.x[256:320], train.y[256:320]))
    assert 0 < result.miou <= 1 and result.predictions.shape == (64, 12, 12)


def test_a_classifier_keeps_its_records_and_refuses_a_miou_monitor():
    model = convgraph.compile({"input": "8x8x1", "pattern": "[INPUT-CONV(4, 3)-GAP-FC(2)]",
                               "train": {"batch": 16}})
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(32, 1, 8, 8)).astype(np.float32), rng.integers(0, 2, 32)
    history = model.fit((x, y), epochs=1, verbose=0)
    assert "train_miou" not in history[0].as_json() and "train_miou" not in history.history
    with pytest.raises(UsageError, match="mean IoU is measured for segmentation only"):
        model.fit((x, y), epochs=1, validation_split=0.25, verbose=0,
                  callbacks=[convgraph.callbacks.EarlyStopping("val_miou")])


# ---------------------------------------------------------------------------- Oclgrind

OCLGRIND_CHILD = """
import sys
import numpy as np
from convgraph.pipeline import analyse
from convgraph.reference import reference_gradients
from convgraph.train.session import TrainingSession
from tests.test_segmentation import head, random_masks
failed = 0
for volume, batch, smoothing in (("3x2x2", 1, 0.0), ("2x3x1", 3, 0.1)):
    graph = analyse(head(volume, 3, smoothing))
    session = TrainingSession(graph, batch=batch)
    assert "Oclgrind" in session.info.platform, session.info.label
    rng = np.random.default_rng(0)
    width, height, depth = (int(v) for v in volume.split("x"))
    x = rng.normal(size=(batch, depth, height, width)).astype(np.float32)
    masks = random_masks(rng, (batch, height, width), 3, 0.3)
    params = session.params
    losses, _, _, grads, _ = reference_gradients(graph, params, x, masks, 0, smoothing)
    result = session.evaluate_batch(x, masks)
    device, _ = session.gradients(x, masks)
    session.step(x, masks, 0.1)
    error = np.abs(device["scores"] - grads["scores"]).max()
    if abs(result.loss - losses.sum()) > 1e-4 or error > 1e-5:
        failed += 1
        print("FAILED", volume, batch)
print("checked")
sys.exit(1 if failed else 0)
"""


def test_the_pixel_loss_kernels_run_clean_under_oclgrind(tmp_path):
    """PIXEL_COUNT, PIXEL_CROSS_ENTROPY and PIXEL_TOTALS (and the step around them) on tiny odd
    shapes, batch 1 and 3, with Oclgrind as the only platform: no report, and the results still
    those of the reference (tests/test_oclgrind.py's set-up)."""
    from tests.test_oclgrind import ICD, run_under_oclgrind

    if not ICD.exists():
        pytest.skip("oclgrind is not installed (apt-get install oclgrind)")
    done, reports = run_under_oclgrind(tmp_path, [sys.executable, "-c", OCLGRIND_CHILD])
    assert done.returncode == 0 and "checked" in done.stdout, (done.stdout, done.stderr[-3000:])
    assert reports == [], reports[:3]
