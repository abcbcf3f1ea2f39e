"""What the CLI prints, where people read it: a terminal of 80 or 60 columns (a real pseudo-
terminal, a real process) and a pipe. Every table keeps each layer name, op and number whole, no
line passes the terminal's width, a pipe gets plain text, and --json is one object."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import convgraph
from convgraph.display import Column, Listing, output_console, plural, print_listing
from convgraph.pipeline import analyse
from convgraph.summary import summary_listing

from .conftest import SPECS
from .terminal import on_a_terminal
from .test_data import write_idx

WIDTHS = (80, 60)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
BOX = set("─━│┃┏┓┗┛┡┩┣┫╇╈┳┻╋┼┬┴├┤└┘┌┐")


def in_terminal(args, columns: int, env: dict | None = None, timeout: float = 240) -> str:
    """The output of ``convgraph ARGS`` run in a pseudo-terminal ``columns`` wide (escape
    sequences removed, lines as a person sees them)."""
    status, output = on_a_terminal([sys.executable, "-m", "convgraph.cli", *map(str, args)],
                                   columns, env, timeout)
    assert status == 0, output
    text = ANSI.sub("", output)
    # a progress line redrawn in place: what stays on screen is its last drawing
    return "\n".join(line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n"))


def in_pipe(args, env: dict | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_fits(text: str, columns: int) -> None:
    long = [line for line in text.splitlines() if len(line) > columns]
    assert not long, f"{len(long)} lines over {columns} columns, e.g. {long[0]!r}"
    assert "…" not in text, "a cell was cut"


def assert_plain(text: str) -> None:
    assert not ANSI.search(text) and not BOX & set(text), "a pipe got colour or box-drawing"
    assert "…" not in text, "a cell was cut"
    assert all(line == line.rstrip() for line in text.splitlines()), "trailing blanks"


def assert_cells_whole(text: str, cells) -> None:
    """Each cell is printed whole: on one line, not split or shortened."""
    lines = text.splitlines()
    missing = [cell for cell in cells if cell and not any(cell in line for line in lines)]
    assert not missing, f"cells not printed whole: {missing[:5]}"


def essential_cells(listing: Listing) -> list[str]:
    """The cells no layout may cut: every column kept in the compact layout (free text word
    by word, as it may wrap)."""
    cells = []
    for row in listing.rows + listing.totals:
        if row is None:
            continue
        for column, cell in zip(listing.columns, row):
            if column.secondary:
                continue
            cells += cell.split() if column.wrap else [cell]
    return cells


# ---------------------------------------------------------------------------- the policy itself

def test_plural_agrees_with_its_count():
    assert [plural(1, "epoch"), plural(2, "epoch"), plural(0, "kernel")] == [
        "1 epoch", "2 epochs", "0 kernels"]
    assert plural(1_024, "image") == "1,024 images"
    assert plural(1, "batch", "batches") == "1 batch" and plural(3, "batch", "batches") == (
        "3 batches")


def test_a_file_gets_plain_rows_whole(tmp_path):
    """A file (as a pipe) gets no box-drawing and one line per row, however long the row."""
    long_name = "a/" * 60 + "layer"
    listing = Listing("t", [Column("layer"), Column("notes", wrap=True)],
                      [[long_name, "word " * 40]])
    with open(tmp_path / "out.txt", "w") as handle:
        print_listing(listing, output_console(file=handle))
    text = (tmp_path / "out.txt").read_text()
    assert_plain(text)
    assert any(long_name in line and line.rstrip().endswith("word") for line in
               text.splitlines())


# ---------------------------------------------------------------------------- compile

@pytest.mark.parametrize("spec", ["resnet18.yaml", "vgg16.yaml"])
def test_compile_summary_in_narrow_terminals_and_pipes(spec):
    listing = summary_listing(analyse(SPECS / spec))
    args = ["compile", SPECS / spec, "--no-kernels"]
    for columns in WIDTHS:
        text = in_terminal(args, columns)
        assert_fits(text, columns)
        assert_cells_whole(text, essential_cells(listing))
    piped = in_pipe(args)
    assert_plain(piped)
    # a pipe has every column, every row on one line
    for row in listing.rows:
        assert any(all(cell in line for cell in row) for line in piped.splitlines()), row
    assert "parameters" in piped.splitlines()[-1]


def test_compile_summary_in_a_wide_terminal_is_the_full_table():
    text = in_terminal(["compile", SPECS / "resnet8.yaml", "--no-kernels"], 160)
    assert_fits(text, 160)
    assert "hyperparameters" in text and "┃" in text


def test_check_json(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('input: 7x7x1\npattern: "[INPUT-POOL(2)]"\n')
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "check", "--json",
                           str(SPECS / "seed.yaml"), str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr == ""
    record = json.loads(done.stdout)
    assert record["ok"] is False
    good, failed = record["specs"]
    assert good["ok"] and good["name"] == "seed" and good["params"] == 31_066
    assert not failed["ok"] and failed["exit_status"] == 2 and "2:18" in failed["error"]


# ---------------------------------------------------------------------------- devices

def test_devices_table_in_narrow_terminals_and_pipes():
    listing = json.loads(in_pipe(["devices", "--json"]))
    indices = [device["index"] for device in listing["devices"]]
    for columns in WIDTHS:
        text = in_terminal(["devices"], columns)
        assert_fits(text, columns)
        assert_cells_whole(text, indices)
        for device in listing["devices"]:
            assert all(word in text for word in device["name"].split())
    piped = in_pipe(["devices"])
    assert_plain(piped)
    for device in listing["devices"]:
        assert any(device["name"] in line and device["platform"] in line
                   for line in piped.splitlines())


# ---------------------------------------------------------------------------- run --verify

@pytest.mark.slow  # three whole --verify runs of ResNet-8 (29 s cold): CI's time
def test_verify_table_in_narrow_terminals_pipes_and_json():
    args = ["run", SPECS / "resnet8.yaml", "--verify", "--batch", "2"]
    record = json.loads(in_pipe([*args, "--json"]))
    assert record["failed"] == 0 and record["passed"] == len(record["checks"])
    layers = [check["layer"] for check in record["checks"]]
    assert "res2/add" in layers
    for columns in WIDTHS[-1:]:  # the narrowest (each run is a whole --verify of ResNet-8)
        text = in_terminal(args, columns)
        assert_fits(text, columns)
        assert_cells_whole(text, layers + ["pass"])
    piped = in_pipe(args)
    assert_plain(piped)
    for check in record["checks"]:
        assert any(line.startswith(check["layer"] + " ") and ", ".join(check["kernels"]) in line
                   for line in piped.splitlines()), check


# ---------------------------------------------------------------------------- run --profile

def test_profile_times_forward_backward_and_update(cli):
    status, out, err = cli("run", SPECS / "seed.yaml", "--profile", "--batch", "8", "--json")
    assert status == 0, err
    profile = json.loads(out)
    phases = {layer["phase"] for layer in profile["layers"]}
    assert phases == {"forward", "backward", "update"} and profile["mode"] == "training"
    for layer in profile["layers"]:
        assert {"node", "op", "milliseconds", "gflops", "gbytes", "peak_fraction",
                "phase", "bound"} <= set(layer)
        assert 0 <= layer["peak_fraction"] <= 1 and layer["bound"] in ("compute", "memory")
    totals = profile["totals_ms"]
    for phase in ("forward", "backward", "update"):
        assert totals[phase] == pytest.approx(sum(
            layer["milliseconds"] for layer in profile["layers"] if layer["phase"] == phase),
            abs=1e-5)
    assert totals["step"] == pytest.approx(
        totals["forward"] + totals["backward"] + totals["update"], abs=1e-5)
    assert profile["wall_ms"] > 0 and profile["peak_gflops"] > 0
    assert {"conv1", "pool1", "fc1", "loss"} <= {layer["node"] for layer in profile["layers"]}


def test_profile_classifies_by_the_ridge_point(cli):
    status, out, _ = cli("run", SPECS / "seed.yaml", "--profile", "--batch", "8", "--json")
    profile = json.loads(out)
    ridge = profile["ridge_flops_per_byte"]
    for layer in profile["layers"]:
        if layer["gflops"] and layer["gbytes"]:
            intensity = layer["gflops"] / layer["gbytes"]
            assert (layer["bound"] == "compute") == (intensity >= ridge * (1 - 1e-6)), layer
        fraction = (layer["gflops"] / profile["peak_gflops"] if layer["bound"] == "compute"
                    else layer["gbytes"] / profile["peak_gbytes"])
        assert layer["above_peak"] == (fraction > 1 + 1e-6) or abs(fraction - 1) < 1e-3
        assert layer["peak_fraction"] == pytest.approx(min(fraction, 1.0), abs=1e-3)


def test_profile_table_sums_to_its_step_total(cli):
    status, out, _ = cli("run", SPECS / "seed.yaml", "--profile", "--batch", "8")
    assert status == 0
    rows = {}
    for line in out.splitlines():
        match = re.match(r"^(forward|backward|update|step) total\s+(?:\w+\s+)?([\d.]+)$",
                         line.strip())
        if match:
            rows[match[1]] = float(match[2])
    assert set(rows) == {"forward", "backward", "update", "step"}, out
    assert rows["step"] == pytest.approx(rows["forward"] + rows["backward"] + rows["update"],
                                         abs=0.0015)
    assert "wall time" in out and "outside the kernels" in out
    assert "%" in out and not re.search(r"\b(1[0-9]{2}|[2-9][0-9]{2})%", out)


def test_profile_of_a_network_ending_in_a_volume_is_its_per_pixel_training_step(cli, write_spec):
    spec = write_spec("""
        name: volume_out
        input: 8x8x3
        pattern: "[INPUT-CONV(4, 3, pad=1)-RELU]"
    """)
    status, out, err = cli("run", spec, "--profile", "--batch", "2", "--json")
    assert status == 0, err
    profile = json.loads(out)
    assert profile["mode"] == "training"  # the per-pixel loss (README: Segmentation)
    assert {layer["phase"] for layer in profile["layers"]} >= {"forward", "backward"}


@pytest.mark.slow  # CI's time; test_profile_times_forward_backward_and_update stays
def test_profile_in_narrow_terminals_and_pipes():
    args = ["run", SPECS / "resnet8.yaml", "--profile", "--batch", "2"]
    names = [name for name in analyse(SPECS / "resnet8.yaml").nodes
             if name not in ("input", "flatten")]
    for columns in WIDTHS:
        text = in_terminal(args, columns)
        assert_fits(text, columns)
        assert_cells_whole(text, [n for n in names if not n.endswith("relu1")] + ["step total"])
    piped = in_pipe(args)
    assert_plain(piped)
    assert re.search(r"^res2/conv1 +conv\S* +forward +[\d.]+ ", piped, re.M)
    assert re.search(r"^res2/conv1 +conv\S* +backward +[\d.]+ ", piped, re.M)


# ---------------------------------------------------------------------------- run --predict

@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """A small Fashion-MNIST in its IDX files (40 test images, 80 training), a spec reading it,
    and weights for the spec: the ten Fashion-MNIST class names, long ones included."""
    folder = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(3)
    for prefix, count in (("train", 80), ("t10k", 40)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 2051,
                  rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), gz=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 2049,
                  np.arange(count, dtype=np.uint8) % 10, gz=True)
    spec = folder / "fashion.yaml"
    spec.write_text(f"name: tiny_fashion\ninput: 28x28x1\n"
                    f'pattern: "[INPUT-CONV(4, 3, pad=1)-RELU-POOL(4)-FC(10)]"\n'
                    f"train: {{dataset: fashion-mnist, data: {folder}, batch: 8}}\n")
    model = convgraph.compile(spec, batch=8)
    weights = folder / "w.npz"
    np.savez(weights, **model.params)
    x = rng.integers(0, 256, (3, 1, 28, 28)).astype(np.uint8)
    np.save(folder / "x.npy", x)
    return folder, spec, weights


def test_predict_names_classes_and_gives_probabilities(fashion):
    folder, spec, weights = fashion
    args = ["run", spec, "--weights", weights, "--predict", folder / "x.npy"]
    record = json.loads(in_pipe([*args, "--softmax", "--top", "3", "--json"]))
    assert record["class_names"][0] == "T-shirt/top" and record["classes"] == 10
    assert record["images"] == 3 and record["probabilities"] is True
    for prediction in record["predictions"]:
        top = prediction["top"]
        assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"]
        assert all(0 <= c["probability"] <= 1 for c in top)
    raw = json.loads(in_pipe([*args, "--top", "10", "--json"]))
    scores = np.array([[c["score"] for c in sorted(p["top"], key=lambda c: c["class"])]
                       for p in raw["predictions"]])
    probabilities = np.exp(scores - scores.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    assert record["predictions"][0]["top"][0]["probability"] == pytest.approx(
        probabilities[0].max(), rel=1e-4)
    cells = [f"{c['class']}: {c['name']} {c['probability']:.1%}" for p in record["predictions"]
             for c in p["top"]]
    for columns in WIDTHS:
        text = in_terminal([*args, "--softmax", "--top", "3"], columns)
        assert_fits(text, columns)
        assert "probabilities (3 images)" in text
        assert_cells_whole(text, cells)  # a list of classes breaks between them only
    piped = in_pipe([*args, "--softmax", "--top", "3"])
    assert_plain(piped)
    assert_cells_whole(piped, cells)


def test_predict_top_beyond_the_classes_is_refused(cli, fashion):
    folder, spec, weights = fashion
    status, out, err = cli("run", spec, "--weights", weights, "--predict", folder / "x.npy",
                           "--top", "11")
    assert status == 2 and out == ""
    assert "--top 11" in err and "(10)" in err and "--top 10 or less" in err


def test_flags_of_predict_alone_are_refused(cli):
    status, _, err = cli("run", SPECS / "seed.yaml", "--profile", "--softmax")
    assert status == 2 and "--softmax is for" in err
    status, _, err = cli("run", SPECS / "seed.yaml", "--verify", "--top", "3")
    assert status == 2 and "--top is for" in err and "Traceback" not in err
    status, _, err = cli("run", SPECS / "seed.yaml", "--json", "--epochs", "1")
    assert status == 2 and "--metrics" in err


# ---------------------------------------------------------------------------- eval

def test_eval_confusion_with_fashion_names(fashion):
    folder, spec, weights = fashion
    args = ["eval", spec, "--weights", weights, "--confusion"]
    record = json.loads(in_pipe([*args, "--json"]))
    assert record["images"] == 40 and len(record["confusion"]) == 10
    assert sum(map(sum, record["confusion"])) == 40
    assert record["class_names"][-1] == "Ankle boot"
    names = [f"{i} {name}" for i, name in enumerate(record["class_names"])]
    counts = [str(v) for row in record["confusion"] for v in row]
    for columns in WIDTHS:
        text = in_terminal(args, columns)
        assert_fits(text, columns)
        assert_cells_whole(text, names + counts)
    piped = in_pipe(args)
    assert_plain(piped)
    for name, row in zip(names, record["confusion"]):
        line = next(line for line in piped.splitlines() if line.startswith(name + " "))
        assert [int(v) for v in line[len(name):].split()] == row


# ---------------------------------------------------------------------------- tune

@pytest.mark.slow  # a tuning run (12 s cold): CI's time
def test_tune_table_in_narrow_terminals_and_pipes(tmp_path, write_spec):
    spec = write_spec("""
        name: tune_me
        input: 8x8x4
        pattern: "[INPUT-CONV(8, 5, pad=2)-FC(2)]"
    """)  # 5x5: a direct conv's space, which the 3 s budget covers with the fc on a busy machine
    env = {"CONVGRAPH_CACHE": str(tmp_path / "cache")}
    args = ["tune", spec, "--budget", "3", "--mode", "infer"]
    record = json.loads(in_pipe([*args, "--json"], env))
    layers = [site["layer"] for model in record["models"] for site in model["sites"]]
    assert layers
    for columns in WIDTHS[-1:]:  # the narrowest (each run is a whole 3 s tune)
        text = in_terminal([*args, "--reset"], columns, env)
        assert_fits(text, columns)
        assert_cells_whole(text, layers)
        assert re.search(r"\d+ kernels? tuned in", text)
    piped = in_pipe(args, env)
    assert_plain(piped)
    assert_cells_whole(piped, layers)


# ---------------------------------------------------------------------------- training

@pytest.mark.slow  # CI's time
def test_training_shows_the_compile_as_its_own_phase(tmp_path):
    args = ["run", SPECS / "seed.yaml", "--epochs", "1", "--limit", "256",
            "--metrics", tmp_path / "m.jsonl"]
    piped = in_pipe(args)
    lines = piped.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("compiling "))
    epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1:"))
    assert first < epoch
    assert re.match(r"compiling \d+ kernels \(first launch\)\.\.\. done in [\d.]+ s", lines[first])
    assert "1 epoch," in piped and "after 1 epoch." in piped
    assert "256 training images" in piped
    for columns in WIDTHS:
        text = in_terminal(args, columns)
        assert_fits(text, columns)
        assert "compiling" in text and "epoch 1:" in text
    record = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    # the first batch (64 images) ran with the compile: neither its time nor its images count
    assert record["images_per_s"] * record["seconds"] == pytest.approx(256 - 64, rel=1e-3)


@pytest.mark.parametrize("columns", [120, 80, 60])
def test_epoch_bar_shows_each_phase_labelled(columns):
    """The bar a terminal sees: the compile, then an epoch's labelled figures, then the
    evaluation (no ETA there, as there is no count of batches to go), within the width."""
    import io

    from rich.console import Console

    from convgraph.train.report import EpochBar

    screen = io.StringIO()
    out = Console(file=screen, force_terminal=True, width=columns, color_system=None)
    frames = []
    with EpochBar(out, epochs=3) as bar:
        for show in (lambda: bar.compiling(1), lambda: bar.update(0, 12, 94, 0.5, 0.75, 2048.0),
                     lambda: bar.evaluating(10_000)):
            show()
            with out.capture() as captured:
                out.print(bar.bar.get_renderable())
            frames.append(captured.get().rstrip())
    compiling, epoch, evaluating = frames
    assert "compiling 1 kernel (first launch)" in compiling
    assert "epoch 1/3" in epoch and "12/94" in epoch and "loss 0.5000" in epoch
    assert "acc 0.7500" in epoch and "ETA " in epoch
    assert ("2,048 img/s" in epoch) == (columns >= 72)
    assert "evaluating 10,000 test images" in evaluating and "ETA" not in evaluating
    assert all(len(line) <= columns for frame in frames for line in frame.splitlines())
