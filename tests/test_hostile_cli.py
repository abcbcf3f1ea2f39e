"""The command line against a hostile user: bad output targets, bad values, --predict without
weights, markup and control characters in names and paths, and the exit-status table.

Each case runs the real CLI (in-process through ``main``, or as a process where the terminal's
encoding matters) on real files: a tiny 8x8x1 network and a 64-image npz data set, one epoch.
Every refusal is one paragraph on stderr with its documented status, before any work starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convgraph.cli
import convgraph.errors
from convgraph.cli import main
from convgraph.errors import ConvgraphError

from .conftest import tiny_images

ROOT = Path(__file__).resolve().parent.parent
TINY = ('input: 8x8x1\npattern: "[INPUT-CONV(4, 3, pad=1)-RELU-POOL-FC(4)]"\n'
        "train: {epochs: 1, batch: 16, lr: 0.05, seed: 5, dataset: npz}\n")


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``convgraph ARGS`` in-process; argparse's own exit
    (SystemExit) counts as the status it carries."""
    try:
        status = main([os.fspath(a) if isinstance(a, Path) else str(a) for a in args])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_refused(status, err, expected: int, *fragments) -> None:
    """The documented status, one paragraph on stderr, no traceback, every fragment there."""
    assert status == expected, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one paragraph: {err!r}"
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


@pytest.fixture
def tiny(tmp_path):
    """(spec, data): the tiny network's spec file and its npz data set, in tmp_path."""
    x, y = tiny_images(count=64)
    x_test, y_test = tiny_images(1, 32)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    return spec, tmp_path / "d.npz"


@pytest.fixture
def a_file(tmp_path) -> Path:
    """A regular file, where a folder would belong."""
    path = tmp_path / "a_file"
    path.write_text("not a folder\n")
    return path


# ---------------------------------------------------------------------------- output targets

BAD_RUN_OUTPUTS = [
    ("checkpoint-dir-is-a-file", ["--checkpoint-dir", "{file}"], 7,
     "the --checkpoint-dir folder", "is a file, not a folder"),
    ("checkpoint-dir-uncreatable", ["--checkpoint-dir", "{file}/sub"], 7,
     "the --checkpoint-dir folder", "cannot be created"),
    ("checkpoint-dir-under-proc", ["--checkpoint-dir", "/proc/1/convgraph"], 7,
     "cannot be created"),
    ("save-to-a-folder", ["--save", "{tmp}"], 7, "the --save file", "is a folder"),
    ("save-in-an-uncreatable-folder", ["--save", "{file}/sub/w.npz"], 7, "--save file",
     "cannot be created"),
    ("save-to-a-fifo", ["--save", "{fifo}"], 7, "is a named pipe (FIFO)"),
    ("metrics-to-a-fifo", ["--metrics", "{fifo}"], 7, "is a named pipe (FIFO)"),
    ("metrics-to-a-folder", ["--metrics", "{tmp}"], 7, "the --metrics file", "is a folder"),
    ("metrics-in-an-uncreatable-folder", ["--metrics", "{file}/m.jsonl"], 7, "--metrics file"),
    ("plot-to-a-folder", ["--plot", "{tmp}"], 7, "the --plot file", "is a folder"),
    ("plot-in-an-uncreatable-folder", ["--plot", "{file}/p.png"], 7, "--plot file"),
    ("plot-in-an-unknown-format", ["--plot", "{tmp}/curves.qqq"], 2,
     "matplotlib cannot write 'qqq'", "Fix: end the name in one of"),
]


@pytest.mark.parametrize(("args", "status", "fragments"),
                         [pytest.param(a, s, f, id=i) for i, a, s, *f in BAD_RUN_OUTPUTS])
def test_bad_output_targets_are_refused_before_any_work(tiny, a_file, tmp_path, capsys,
                                                        args, status, fragments):
    """Each bad target stops `run` before the data is read or anything is built: no training
    line, nothing written (today's main trained first and exited 70 at the first save)."""
    spec, data = tiny
    fifo = tmp_path / "fifo"  # a special file of this test's own (a save would replace it)
    os.mkfifo(fifo)
    args = [a.format(file=a_file, tmp=tmp_path, fifo=fifo) for a in args]
    code, out, err = run_cli(capsys, "run", spec, "--data", data, *args)
    assert_refused(code, err, status, *fragments, "Fix:")
    assert "training" not in out and not (tmp_path / "w.npz").exists()


@pytest.mark.parametrize("where", ["a-folder", "uncreatable"])
def test_predict_output_is_checked_and_written_to_exactly_its_path(tiny, a_file, tmp_path,
                                                                   capsys, where):
    """--output DIR used to write DIR.npy; a folder and an uncreatable folder are refused, and a
    name without .npy is written as given, not with a suffix added."""
    spec, data = tiny
    x = tmp_path / "x.npy"
    np.save(x, tiny_images(2, 4)[0])
    target = {"a-folder": tmp_path, "uncreatable": a_file / "scores.npy"}[where]
    code, _, err = run_cli(capsys, "run", spec, "--predict", x, "--random-weights",
                           "--output", target)
    assert_refused(code, err, 7, "the --output file")
    assert not Path(f"{tmp_path}.npy").exists()
    plain = tmp_path / "scores"
    code, _, err = run_cli(capsys, "run", spec, "--predict", x, "--random-weights",
                           "--output", plain)
    assert code == 0, err
    assert np.load(plain).shape == (4, 4) and not Path(f"{plain}.npy").exists()


@pytest.mark.parametrize(("args", "fragments"), [
    pytest.param(["-o", "{file}"], ("the -o folder", "is a file, not a folder"), id="o-a-file"),
    pytest.param(["-o", "{file}/art"], ("the -o folder", "cannot be created"), id="o-under-file"),
    pytest.param(["-o", "/proc/1/art"], ("cannot be created",), id="o-under-proc"),
    pytest.param(["--graph", "{file}/net.svg"], ("the folder of the --graph file",),
                 id="graph-under-file"),
    pytest.param(["--graph", "{tmp}"], ("the --graph file", "is a folder"), id="graph-a-folder"),
])
def test_compile_outputs_are_output_errors(tmp_path, a_file, capsys, args, fragments):
    """Unwritable compile targets are exit 7 (they were 1, the --verify status), and a missing
    folder is never reported as a format dot does not know."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    args = [a.format(file=a_file, tmp=tmp_path) for a in args]
    code, out, err = run_cli(capsys, "compile", spec, "--no-kernels", *args)
    assert_refused(code, err, 7, *fragments)
    assert "format dot knows" not in err and out == ""


def test_graph_into_a_missing_folder_creates_it(tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    target = tmp_path / "nodir" / "net.dot"
    code, out, err = run_cli(capsys, "compile", spec, "--no-kernels", "--graph", target)
    assert code == 0, err
    assert target.read_text().startswith("digraph")


@pytest.mark.parametrize("sabotage", ["path-becomes-a-folder", "folder-becomes-a-file"])
def test_a_save_that_fails_at_the_end_keeps_the_weights(tiny, tmp_path, capsys, monkeypatch,
                                                        sabotage):
    """The --save path passes the check, then becomes a folder (or its folder is removed and a
    file put in its place) while the network trains: the weights go to a fallback file the
    message names (exit 7), and that file loads. Today's main lost them (exit 70)."""
    import shutil

    from convgraph.train.checkpoint import load_weights

    spec, data = tiny
    target = tmp_path / "out" / "w.npz"
    checked = convgraph.cli.check_run_arguments

    def check_then_take_the_path(args):
        checked(args)  # after the check, before the save:
        if sabotage == "path-becomes-a-folder":
            target.mkdir(parents=True)
        else:
            shutil.rmtree(target.parent)
            target.parent.write_text("a file where the folder was\n")

    monkeypatch.setattr(convgraph.cli, "check_run_arguments", check_then_take_the_path)
    code, out, err = run_cli(capsys, "run", spec, "--data", data, "--save", target)
    assert "epoch 1:" in out
    assert_refused(code, err, 7, f"cannot write the trained weights to {target}",
                   "saved them to ", "instead")
    fallback = Path(re.search(r"saved them to (.+?\.npz) instead", err).group(1))
    assert fallback.parent == tmp_path and fallback.name.startswith("tiny")
    params, saved = load_weights(fallback)
    assert "conv1.weight" in params and saved is not None  # the normalisation came along


# ---------------------------------------------------------------------------- values

BAD_VALUES = [
    ("run", ["--limit", "0"], "argument --limit: must be at least 1, got 0"),
    ("run", ["--limit", "-5"], "argument --limit: must be at least 1, got -5"),
    ("run", ["--top", "0"], "argument --top: must be at least 1, got 0"),
    ("run", ["--top", "-1"], "argument --top: must be at least 1, got -1"),
    ("run", ["--epochs", "0"], "argument --epochs: must be at least 1"),
    ("run", ["--epochs", "2.5"], "argument --epochs: expected a whole number, got '2.5'"),
    ("run", ["--batch", "0"], "argument --batch: must be at least 1, got 0"),
    ("compile", ["--batch", "0"], "argument --batch: must be at least 1, got 0"),
    ("compile", ["--batch", "-3"], "argument --batch: must be at least 1, got -3"),
    ("eval", ["--weights", "w.npz", "--batch", "0"], "argument --batch: must be at least 1"),
    ("tune", ["--batch", "0"], "argument --batch: must be at least 1"),
    ("run", ["--lr", "0"], "argument --lr: must be a finite number above 0, got 0"),
    ("run", ["--lr", "-0.1"], "argument --lr: must be a finite number above 0"),
    ("run", ["--lr", "nan"], "argument --lr: must be a finite number above 0, got nan"),
    ("run", ["--lr", "inf"], "argument --lr: must be a finite number above 0, got inf"),
    ("tune", ["--budget", "0"], "argument --budget: must be a finite number above 0, got 0"),
    ("tune", ["--budget", "-5"], "argument --budget: must be a finite number above 0"),
    ("tune", ["--budget", "nan"], "argument --budget: must be a finite number above 0"),
    ("tune", ["--budget", "inf"], "argument --budget: must be a finite number above 0"),
    ("tune", ["--budget", "soon"], "argument --budget: expected a number, got 'soon'"),
    ("run", ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ("run", ["--save", ""], "argument --save: expected a path, got an empty string"),
    ("compile", ["--graph", ""], "argument --graph: expected a path, got an empty string"),
    ("compile", ["-o", ""], "argument -o/--output: expected a path, got an empty string"),
    ("eval", ["--weights", ""], "argument --weights: expected a path, got an empty string"),
]


@pytest.mark.parametrize(("command", "args", "fragment"),
                         [pytest.param(c, a, f, id=f"{c}{'_'.join(a)}") for c, a, f in BAD_VALUES])
def test_bad_values_are_usage_errors(tmp_path, capsys, command, args, fragment):
    """Counts below 1 and rates that are not finite and positive stop the command at once, with
    one paragraph and exit 2, on every command alike (compile --batch 0 was 5, run's 2; --limit 0
    trained on everything, --limit -5 on all but five; tune --budget 0 saved nothing, exit 0)."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    code, out, err = run_cli(capsys, command, spec, *args)
    prefix = "convgraph" if "unrecognized" in fragment else f"convgraph {command}"
    assert_refused(code, err, 2, f"{prefix}: error: {fragment}", f"See '{prefix} --help'.")
    assert out == ""


def test_training_only_flags_are_refused_elsewhere(tiny, tmp_path, capsys):
    spec, _ = tiny
    x = tmp_path / "x.npy"
    np.save(x, tiny_images(2, 4)[0])
    code, _, err = run_cli(capsys, "run", spec, "--predict", x, "--random-weights",
                           "--save", tmp_path / "w.npz", "--limit", "3")
    assert_refused(code, err, 2, "--save, --limit are for training, not --predict")
    code, _, err = run_cli(capsys, "run", spec, "--output", tmp_path / "s.npy")
    assert_refused(code, err, 2, "--output saves the scores of --predict")


# ---------------------------------------------------------------------------- --predict

def test_predict_needs_weights_or_random_weights(tiny, tmp_path, capsys):
    """Random weights gave confident scores without a word; now they must be asked for."""
    spec, _ = tiny
    x = tmp_path / "x.npy"
    np.save(x, tiny_images(2, 4)[0])
    code, out, err = run_cli(capsys, "run", spec, "--predict", x)
    assert_refused(code, err, 2, "--predict without --weights",
                   "Fix: give the trained weights with --weights FILE.npz", "--random-weights")
    assert out == ""
    code, out, err = run_cli(capsys, "run", spec, "--predict", x, "--random-weights")
    assert code == 0 and err == "" and "class scores (4 images)" in out


def test_predict_warns_of_an_input_off_the_training_scale(tiny, tmp_path, capsys):
    """Weights trained on uint8 pixels (read as 0..1) given the same pixels as float 0..255: a
    one-line warning naming both scales; the same pixels as uint8 or as float 0..1: none."""
    spec, data = tiny
    weights = tmp_path / "w.npz"
    code, _, err = run_cli(capsys, "run", spec, "--data", data, "--save", weights)
    assert code == 0, err
    pixels = tiny_images(2, 8)[0]
    for name, batch, warned in (("u8", pixels, False), ("unit", pixels / np.float32(255), False),
                                ("f255", pixels.astype(np.float32), True)):
        np.save(tmp_path / f"{name}.npy", batch)
        code, out, err = run_cli(capsys, "run", spec, "--predict", tmp_path / f"{name}.npy",
                                 "--weights", weights)
        assert code == 0 and "class scores (8 images)" in out
        if warned:
            assert err.startswith("convgraph: warning: the input's channel 0 has values 0..")
            assert "but the weights were trained on data of mean" in err
            assert err.count("\n") == 1
        else:
            assert err == "", name


# ---------------------------------------------------------------------------- untrusted text

@pytest.mark.parametrize("name", ["[/oops]", "[bold]loud", "[link=file:///etc]x"])
def test_markup_in_a_model_name_is_printed_as_it_is(tiny, capsys, name):
    """A model named "[/oops]" made compile and run exit 70 (rich's MarkupError)."""
    spec, data = tiny
    spec.write_text(f'name: "{name}"\n' + TINY)
    code, out, err = run_cli(capsys, "compile", spec, "--no-kernels")
    assert code == 0, err
    assert re.sub(r"\s+", " ", out).startswith(f"{name} (")  # the title may wrap
    code, out, err = run_cli(capsys, "run", spec, "--data", data)
    assert code == 0, err
    assert f"training '{name}' on " in out


def test_markup_in_a_spec_path_is_printed_as_it_is(tmp_path, capsys):
    folder = tmp_path / "a[" / "x]"  # the path holds "[/x]", a closing tag
    folder.mkdir(parents=True)
    spec = folder / "[red]tiny.yaml"
    spec.write_text(TINY)
    code, out, err = run_cli(capsys, "compile", spec, "--no-kernels")
    assert code == 0, err
    assert "[/x]" in re.sub(r"\s+", "", out) and "[red]tiny.yaml" in out
    code, out, err = run_cli(capsys, "check", spec)
    assert code == 0 and out.startswith(f"ok   {spec}: ")


def test_control_characters_are_shown_escaped(tmp_path, capsys):
    """C0, C1 and bidirectional controls in a model name or a file name never reach the
    terminal: ESC [2J would clear it, \\x9b starts a sequence on many terminals."""
    spec = tmp_path / "evil\x1b[2J\u202e.yaml"
    spec.write_text('name: "a\\u009bb\\e[31mred"\n' + TINY)
    code, out, err = run_cli(capsys, "compile", spec, "--no-kernels")
    assert code == 0, err
    assert out.startswith("a\\x9bb\\x1b[31mred ")
    assert "evil\\x1b[2J\\u202e.yaml" in out.replace("\n", "")
    code, out, err = run_cli(capsys, "check", spec)
    assert code == 0 and "evil\\x1b[2J\\u202e.yaml: a\\x9bb\\x1b[31mred," in out
    for text in (out, err):
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", text), repr(text)
    # in error messages too: a missing file, a bad pattern, both named with controls
    gone = tmp_path / "gone\x1b]0;pwned\x07.yaml"
    code, out, err = run_cli(capsys, "compile", gone)
    assert code == 2 and err.startswith(f"convgraph: error: {tmp_path}/gone\\x1b]0;pwned\\x07")
    bad = tmp_path / "bad\x9b.yaml"
    bad.write_text('input: 8x8x1\npattern: "[INPUT-C\\u009bONV]"\n')
    code, out, err = run_cli(capsys, "compile", bad)
    assert code == 2 and "bad\\x9b.yaml:2:19: unexpected character '\\x9b'" in err, err
    for command in ("compile", "check"):
        code, out, err = run_cli(capsys, command, bad)
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", err), repr(err)


def test_a_non_utf8_file_name_is_shown_with_its_bytes_escaped(tmp_path):
    """A file name that is not UTF-8 (a lone surrogate in Python) exited 70 printing it."""
    folder = os.fsencode(tmp_path)
    spec = folder + b"/caf\xe9 [b]x.yaml"
    with open(spec, "wb") as handle:
        handle.write(TINY.encode())
    for command in (["compile", spec, "--no-kernels"], ["check", spec],
                    ["check", folder + b"/gone\xff.yaml"]):
        done = subprocess.run([sys.executable, "-m", "convgraph.cli", *command],
                              capture_output=True, timeout=120, cwd=ROOT,
                              env=dict(os.environ, PYTHONIOENCODING="utf-8"))
        out, err = done.stdout.decode(), done.stderr.decode()
        assert "Traceback" not in err and "internal error" not in err, err
        if b"gone" in command[1]:
            assert done.returncode == 2 and "gone\\xff.yaml" in err, err
        else:
            assert done.returncode == 0, err
            assert "caf\\xe9 [b]x.yaml" in re.sub(r"\s+", " ", out)


# ---------------------------------------------------------------------------- exit statuses

def _readme_statuses() -> dict[int, str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| status | meaning |", 1)[1].split("\n\n", 1)[0]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| (.+) \|$", table,
                                                               re.MULTILINE)}


def _errors_py_statuses() -> set[int]:
    doc = convgraph.errors.__doc__
    table = doc.split("====  ====", 1)[1].rsplit("====  ====", 1)[0]
    found = {int(m.group(1)) for m in re.finditer(r"^(\d+)\s", table, re.MULTILINE)}
    found |= {int(m.group(1)) for m in re.finditer(r"\b(\d{3}) (?:interrupted|terminated)", table)}
    return found


def test_the_readme_exit_status_table_is_errors_py_s():
    """One table: the README's and errors.py's list the same statuses, and every error class's
    status is in both, with the README row naming what it is for."""
    readme, documented = _readme_statuses(), _errors_py_statuses()
    assert set(readme) == documented == {0, 1, 2, 3, 4, 5, 6, 7, 8, 129, 130, 143, 70}
    classes, stack = set(), [ConvgraphError]
    while stack:
        cls = stack.pop()
        classes.add(cls)
        stack += cls.__subclasses__()
    for cls in classes:
        assert cls.exit_status in readme, cls
    assert "--verify" in readme[1] and "bug" in readme[70]
    assert "written" in readme[7] and "spec" in readme[2]


def test_statuses_of_commands_that_left_the_table(tmp_path, a_file, capsys):
    """run on a folder without spec.yaml is a usage error (2, it was 1); compile -o into a file
    is an output error (7, it was 1); nothing but --verify exits 1."""
    code, _, err = run_cli(capsys, "run", tmp_path)
    assert_refused(code, err, 2, "is a directory without spec.yaml")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    code, _, err = run_cli(capsys, "compile", spec, "--no-kernels", "-o", a_file)
    assert_refused(code, err, 7)


# ---------------------------------------------------------------------------- messages

def test_an_unusable_home_is_not_reported_as_a_missing_platform(a_file):
    """PoCL gives no platform when its kernel cache cannot be created; that said "install
    pocl-opencl-icd" (installed already) instead of naming the cache folder."""
    from convgraph.runtime.devices import _icd_folder

    folder = _icd_folder()
    if not (os.path.isdir(folder) and any("pocl" in f.lower() for f in os.listdir(folder))):
        pytest.skip("PoCL's ICD is not registered here")
    env = {k: v for k, v in os.environ.items()
           if k not in ("POCL_CACHE_DIR", "XDG_CACHE_HOME", "CONVGRAPH_CACHE")}
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "devices"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(env, HOME=str(a_file)))
    assert_refused(done.returncode, done.stderr, 4, "PoCL is installed, but its kernel cache "
                   f"folder {a_file}/.cache/pocl (from $HOME) cannot be created",
                   "Fix: set POCL_CACHE_DIR to a folder you can write")
    assert "apt-get install" not in done.stderr


def test_an_unwritable_tuning_folder_is_refused_before_timing(tmp_path, a_file):
    """tune timed every kernel, then failed to save the table; now its folder is checked first
    (exit 7, in well under the budget)."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "tune", str(spec),
                           "--budget", "60"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=dict(os.environ, CONVGRAPH_CACHE=str(a_file / "cache")))
    assert_refused(done.returncode, done.stderr, 7, "the tuning folder",
                   f"{a_file}/cache/tuning cannot be created")


@pytest.mark.parametrize("command", [
    ["run", "{spec}", "--predict", "{fifo}", "--random-weights"],
    ["run", "{spec}", "--predict", "{x}", "--weights", "{fifo}"],
    ["run", "{spec}", "--data", "{data}", "--weights", "{fifo}"],
    ["eval", "{spec}", "--data", "{data}", "--weights", "{fifo}"],
], ids=["predict-input", "predict-weights", "train-weights", "eval-weights"])
def test_special_files_named_on_the_command_line_are_refused_at_once(tiny, tmp_path, command):
    """A FIFO as --predict input or --weights blocked the read forever; it is refused before
    anything is built (exit 5), as a process under a deadline, since a hang is the bug."""
    spec, data = tiny
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    x = tmp_path / "x.npy"
    np.save(x, tiny_images(2, 4)[0])
    args = [a.format(spec=spec, fifo=fifo, x=x, data=data) for a in command]
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert_refused(done.returncode, done.stderr, 5, f"{fifo} is a named pipe (FIFO)")


def test_expand_of_a_hostile_name_stays_one_comment_line(tmp_path, capsys):
    """--expand's header comment held the name as it is: a line break ended the comment and
    the rest of the name became YAML, so the expanded spec no longer read back."""
    spec = tmp_path / "nl.yaml"
    spec.write_text('name: "two\\nlines: [\\e[2J"\n' + TINY)
    code, out, err = run_cli(capsys, "compile", spec, "--expand")
    assert code == 0, err
    assert out.splitlines()[0].startswith("# two\\x0alines: [\\x1b[2J: canonical graph form")
    again = tmp_path / "again.yaml"
    again.write_text(out)
    code, out, err = run_cli(capsys, "check", again)
    assert code == 0, err


@pytest.mark.parametrize("name", ["x */ #error boom /*", "a*/*/b", "/*/", "nul\\0cut", "ünï\\e"])
def test_a_model_name_cannot_break_the_kernel_source(tmp_path, capsys, name):
    """The name goes into the program's opening comment: "*/" ended it and the rest of the name
    became OpenCL C, which the device compiler rejected (exit 3, "a bug in code generation")."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(f'name: "{name}"\n' + TINY)
    code, out, err = run_cli(capsys, "compile", spec, "-o", tmp_path / "out")
    assert code == 0, err
    first = (tmp_path / "out" / "kernels.cl").read_text().splitlines()[0]
    assert first.startswith("/* Generated by convgraph for '") and first.count("*/") == 1
    assert first.count("/*") == 1


def test_a_model_name_is_not_mathtext_in_the_plot(tiny, tmp_path, capsys):
    """The plot's title went to matplotlib as it is: '$\\frac{$' is mathtext that does not parse,
    and the run ended with exit 70 after training."""
    spec, data = tiny
    spec.write_text('name: "$\\\\frac{$ [/x]"\n' + TINY)
    plot = tmp_path / "curves.png"
    code, out, err = run_cli(capsys, "run", spec, "--data", data, "--plot", plot)
    assert code == 0, err
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_atomic_write_never_renames_over_a_special_file(tmp_path):
    """The last guard under every save: a FIFO, or a symlink to a device, is not replaced by
    the renamed temporary file (as root, a save to /dev/null once made it a regular file on
    this machine); a symlink to a regular file is written as before."""
    import errno
    import os

    from convgraph.files import atomic_write

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "devnull").symlink_to("/dev/null")
    (tmp_path / "real").write_bytes(b"old")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for name in ("fifo", "devnull"):
        with pytest.raises(FileExistsError) as refused:
            atomic_write(tmp_path / name, lambda handle: handle.write(b"x"))
        assert refused.value.errno == errno.EEXIST
    assert (tmp_path / "devnull").is_symlink() and os.stat("/dev/null").st_rdev
    atomic_write(tmp_path / "link", lambda handle: handle.write(b"new"))
    assert (tmp_path / "link").read_bytes() == b"new"
