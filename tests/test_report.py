"""The training curves (`run --plot`) and the HTML run report (`run --report`, `convgraph report`):
the page as a real headless browser renders it offline (Debian's chromium: a screenshot and the
DOM after rendering), the page rewritten during training, and what it says about a checkpoint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from convgraph.draw import plan_drawing
from convgraph.pipeline import analyse
from convgraph.train.html_report import ReportData, confusion_table, render, write_report
from convgraph.train.report import best_epoch, history_figure

from .conftest import SPECS, tiny_images

pytestmark = pytest.mark.timeout(300)

SECTIONS = ("overview", "summary", "graph", "curves", "history", "confusion", "profile",
            "settings")
EMBEDDED_TEST_IMAGES = 2000
HISTORY = [dict(epoch=i + 1, train_loss=2.0 / (i + 1), train_accuracy=0.5 + 0.04 * i,
                test_loss=2.2 / (i + 1) + 0.01 * i * i,
                test_accuracy=0.45 + 0.05 * i - 0.006 * i * i, lr=0.1 * 0.5 ** (i // 3),
                images_per_s=1000.0, seconds=3.0) for i in range(9)]


# ---------------------------------------------------------------------------- a real browser

def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the report is not "
                    "rendered in a browser here")
    return found


def browse(page, tmp_path, *what: str) -> subprocess.CompletedProcess:
    """Chromium, headless and offline (every host name fails to resolve, a dead proxy), on the
    file ``page``."""
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--proxy-server=127.0.0.1:9",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,2000", *what,
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)


def rendered_dom(page, tmp_path) -> str:
    done = browse(page, tmp_path, "--dump-dom")
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-2000:]
    return done.stdout


def screenshot(page, tmp_path):
    from PIL import Image

    shot = tmp_path / f"{page.stem}.png"
    done = browse(page, tmp_path, f"--screenshot={shot}")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    return Image.open(shot).convert("L")


def section(dom: str, anchor: str) -> str:
    """The HTML of ``<section id=anchor>``, up to the next section."""
    start = dom.index(f'<section id="{anchor}">')
    end = dom.find("<section ", start + 1)
    return dom[start:end if end > 0 else len(dom)]


# ---------------------------------------------------------------------------- one real run

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """`convgraph run seed.yaml --report` as a user runs it (a real process): 2 epochs on 640
    embedded images, with a checkpoint folder."""
    folder = tmp_path_factory.mktemp("run")
    page = folder / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "convgraph.cli", "run", str(SPECS / "seed.yaml"), "--epochs", "2",
         "--limit", "640", "--checkpoint-dir", str(folder / "ck"), "--metrics",
         str(folder / "metrics.jsonl"), "--report", str(page)],
        capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr
    assert f"wrote the run report to {page}" in done.stdout
    return folder, page


@pytest.mark.device
def test_the_final_page_is_one_file_that_needs_no_network(trained_run):
    _, page = trained_run
    text = page.read_text()
    assert 'http-equiv="refresh"' not in text  # the final version stops reloading
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not re.search(r"<(?:script|link|img|iframe)\b", text, re.I)
    assert "<style>" in text and text.count("<svg") == 2


@pytest.mark.device
def test_the_browser_renders_the_page_into_a_picture(trained_run, tmp_path):
    from PIL import ImageStat

    _, page = trained_run
    image = screenshot(page, tmp_path)
    assert image.size == (1280, 2000)
    stats = ImageStat.Stat(image)
    assert stats.var[0] > 500, "the screenshot is (nearly) one colour"
    # the dark page header, then light cards: rows of the picture differ
    top, lower = image.crop((0, 0, 1280, 60)), image.crop((0, 400, 1280, 1400))
    assert ImageStat.Stat(top).mean[0] < 100 < ImageStat.Stat(lower).mean[0]


@pytest.mark.device
def test_the_rendered_page_has_every_section_with_its_content(trained_run, tmp_path):
    folder, page = trained_run
    dom = rendered_dom(page, tmp_path)
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in dom, anchor
    graph = analyse(SPECS / "seed.yaml")
    drawn = section(dom, "graph")
    boxes = re.findall(r'<g id="node\d+" class="node">\s*<title>([^<]+)</title>', drawn)
    assert sorted(boxes) == sorted(plan_drawing(graph).boxes)
    for layer in graph:  # every layer is in the picture: its own box or its host's
        assert layer in drawn, layer
    curves = section(dom, "curves")
    assert "<svg" in curves and all(f'id="axes_{k}"' in curves for k in (1, 2, 3))
    summary = section(dom, "summary")
    assert "31,066" in summary and all(f">{layer}<" in summary for layer in graph)
    history = section(dom, "history")
    assert len(re.findall(r"<tr[ >]", history)) == 1 + 2  # the head and two epochs
    ids = re.findall(r'\bid="([^"]+)"', dom)
    assert len(ids) == len(set(ids)), "two inline pictures share element ids"


@pytest.mark.device
def test_the_confusion_matrix_counts_every_test_image(trained_run, tmp_path):
    import json

    folder, page = trained_run
    table = section(rendered_dom(page, tmp_path), "confusion")
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    counts = [[int(v) for v in re.findall(r'<td class="num[^"]*"[^>]*>(\d+)</td>', row)]
              for row in rows[1:]]
    classes = len(counts) - 1  # the last row holds the column totals
    matrix = np.array([row[:classes] for row in counts[:classes]])
    assert matrix.shape == (10, 10) and matrix.sum() == EMBEDDED_TEST_IMAGES
    assert [row[classes] for row in counts[:classes]] == list(matrix.sum(axis=1))
    assert counts[-1] == [*matrix.sum(axis=0), EMBEDDED_TEST_IMAGES]
    last = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.trace(matrix) == round(last["test_accuracy"] * EMBEDDED_TEST_IMAGES)


@pytest.mark.device
def test_report_builds_the_page_from_the_checkpoint_folder(trained_run, tmp_path):
    folder, _ = trained_run
    page = tmp_path / "again.html"
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "report", str(folder / "ck"),
                           "--spec", str(SPECS / "seed.yaml"), "-o", str(page)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(2 epochs)" in done.stdout
    dom = rendered_dom(page, tmp_path)
    assert len(re.findall(r"<tr[ >]", section(dom, "history"))) == 3
    assert '<g id="node1" class="node">' in section(dom, "graph")
    assert "convgraph eval SPEC --weights" in section(dom, "confusion")
    # without --spec, the network comes from the spec the checkpoint's header holds
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "report", str(folder / "ck")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = (folder / "ck" / "report.html").read_text()
    assert "<svg" in section(text, "graph") and "<svg" in section(text, "curves")
    assert "--spec SPEC" not in section(text, "graph")


@pytest.mark.device
def test_report_rebuilds_the_network_from_a_header_that_holds_its_spec(trained_run, tmp_path):
    from convgraph.spec.expand import expanded_yaml
    from convgraph.train.checkpoint import load_checkpoint, save_checkpoint

    folder, _ = trained_run
    params, optimizer, header = load_checkpoint(folder / "ck" / "last.npz")
    header["spec_yaml"] = expanded_yaml(analyse(SPECS / "seed.yaml").graph["spec"])
    save_checkpoint(tmp_path / "ck" / "last.npz", params, optimizer, header)
    page = tmp_path / "from-header.html"
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "report", str(tmp_path / "ck"),
                           "-o", str(page)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert '<g id="node1" class="node">' in section(text, "graph")
    assert "31,066" in section(text, "summary")


@pytest.mark.device
def test_a_checkpoint_without_its_spec_gets_the_curves_and_says_how_to_draw_the_rest(
        trained_run, tmp_path):
    from convgraph.train.checkpoint import load_checkpoint, save_checkpoint

    folder, _ = trained_run
    params, optimizer, header = load_checkpoint(folder / "ck" / "last.npz")
    header.pop("spec_yaml", None)  # as a checkpoint of an older convgraph has it
    save_checkpoint(tmp_path / "ck" / "last.npz", params, optimizer, header)
    page = tmp_path / "old.html"
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "report", str(tmp_path / "ck"),
                           "-o", str(page)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "--spec SPEC" in section(text, "graph") and "<svg" in section(text, "curves")


@pytest.mark.device
def test_the_page_is_rewritten_after_every_epoch_and_reloads_while_training(tmp_path):
    import convgraph
    from convgraph.train.html_report import ReportWriter
    from convgraph.train.loop import Callback

    spec = tmp_path / "tiny.yaml"
    spec.write_text(textwrap.dedent("""\
        name: tiny
        input: 8x8x1
        pattern: "[INPUT-CONV(4, 3, pad=1)-RELU-POOL-FC(4)]"
        train: {epochs: 3, batch: 16, lr: 0.05, dataset: npz}
        """))
    page = tmp_path / "live.html"
    seen = []

    class ReadThePage(Callback):  # after the writer: what a reloading browser finds
        def on_epoch_end(self, trainer, record):
            text = page.read_text()
            seen.append(('http-equiv="refresh"' in text,
                         len(re.findall(r"<tr[ >]", section(text, "history"))) - 1))

    x, y = tiny_images(0, 64)
    model = convgraph.compile(spec)
    writer = ReportWriter(page, "tiny")
    model.fit((x, y), test_data=tiny_images(1, 32), callbacks=[writer, ReadThePage()])
    assert seen == [(True, 1), (True, 2), (True, 3)]
    writer.finish(model)
    text = page.read_text()
    assert 'http-equiv="refresh"' not in text
    assert "<table class=\"confusion\">" in text and "<table class=\"profile\">" in text
    assert not list(tmp_path.glob(".live.html.*"))  # written atomically: no temporary left
    writer.finish(note="interrupted (SIGINT) at epoch 3")  # what a stopped run leaves
    text = page.read_text()
    assert 'http-equiv="refresh"' not in text and "interrupted (SIGINT) at epoch 3" in text
    assert "Not computed: training did not finish." in section(text, "confusion")


def test_what_the_user_wrote_is_escaped_in_the_page(write_spec, tmp_path):
    hostile = "<script>alert(1)</script> & \"quotes\""
    spec = write_spec(f"name: '{hostile}'\ninput: 8x8x1\n"
                      'pattern: "[INPUT-CONV(2, 3)-FC(2)]"\n')
    page = tmp_path / "hostile.html"
    write_report(page, ReportData(title=hostile, graph=analyse(spec), history=HISTORY,
                                  settings={"data": "<img src=x onerror=alert(1)>"},
                                  confusion=np.eye(2, dtype=int), class_names=["<b>", "&"]))
    text = page.read_text()
    assert "<script>" not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        dom = rendered_dom(page, tmp_path)
        assert "<script" not in dom and "<img" not in dom


# ---------------------------------------------------------------------------- the CLI's checks

@pytest.mark.parametrize("target, status, words", [
    ("{tmp}/report.txt", 2, "is not an .html file"),
    ("{tmp}/a-file/report.html", 7, "the folder of the --report file"),
])
def test_the_report_file_is_checked_before_training(cli, tmp_path, target, status, words):
    (tmp_path / "a-file").write_text("")
    code, out, err = cli("run", SPECS / "seed.yaml", "--report",
                         target.format(tmp=tmp_path))
    assert code == status and words in err and "training" not in out
    assert "Traceback" not in err


def test_report_is_for_training_only(cli, tmp_path):
    code, _, err = cli("run", SPECS / "seed.yaml", "--verify", "--report", tmp_path / "r.html")
    assert code == 2 and "--report is for training, not --verify" in err


def test_report_of_a_folder_without_a_checkpoint_says_so(cli, tmp_path):
    code, _, err = cli("report", tmp_path)
    assert code == 5 and "holds no last.npz" in err and "Traceback" not in err


def test_report_refuses_a_corrupt_checkpoint_and_an_unwritable_page(cli, tmp_path):
    (tmp_path / "last.npz").write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = cli("report", tmp_path)
    assert code == 5 and "last.npz" in err and "Traceback" not in err
    assert not (tmp_path / "report.html").exists()
    (tmp_path / "page.html").mkdir()
    code, _, err = cli("report", tmp_path, "-o", tmp_path / "page.html")
    assert code == 7 and "the report file" in err and "is a folder" in err


# ---------------------------------------------------------------------------- the curves

def test_the_best_epoch_is_the_best_test_accuracy_else_the_lowest_train_loss():
    assert best_epoch(HISTORY) == (5, "best test accuracy 0.5540")
    untested = [dict(r, test_loss=None, test_accuracy=None) for r in HISTORY[:4]]
    untested[2]["train_loss"] = 0.1
    assert best_epoch(untested) == (3, "lowest train loss 0.1000")
    assert best_epoch([]) is None


@pytest.mark.parametrize("epochs", [1, 2, 9])
def test_the_curves_have_whole_epoch_ticks_a_rate_panel_and_the_best_epoch_marked(epochs):
    import matplotlib.pyplot as plt

    figure = history_figure(HISTORY[:epochs], "seed on embedded")
    try:
        figure.canvas.draw()
        loss, accuracy, rate = figure.axes
        assert rate.get_ylabel() == "learning rate"
        assert list(rate.lines[0].get_ydata()) == [r["lr"] for r in HISTORY[:epochs]]
        best = best_epoch(HISTORY[:epochs])[0]
        for axis in figure.axes:
            low, high = axis.get_xlim()
            ticks = [t for t in axis.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
            assert any(list(line.get_xdata()) == [best, best] for line in axis.lines)
        assert f"best: epoch {best}" in [t.get_text().split("\n")[0]
                                         for t in accuracy.get_legend().get_texts()]
    finally:
        plt.close(figure)


def test_the_confusion_table_has_row_and_column_totals():
    matrix = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 4]])
    text = confusion_table(matrix, ["cat", "dog", "<fish>"])
    assert "&lt;fish&gt;" in text and "<fish>" not in text
    assert "16 of 20 test images right (0.8000)" in text
    assert '<td class="num total">20</td>' in text
    assert re.findall(r'<td class="num total">(\d+)</td>', text) == ["6", "10", "4", "7", "8",
                                                                     "5", "20"]
    empty = re.search(r'<td class="num" style="([^"]*)">0</td>', text).group(1)
    assert "0.000)" in empty  # an empty cell is not coloured


def test_a_page_without_graphviz_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    text = render(ReportData(title="seed", graph=analyse(SPECS / "seed.yaml"), history=HISTORY))
    assert "dot&#x27; is not installed" in section(text, "graph")
    assert "<svg" in section(text, "curves")
