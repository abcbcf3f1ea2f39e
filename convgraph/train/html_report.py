"""The run report: one self-contained HTML page about a training run.

``convgraph run SPEC --report FILE.html`` rewrites it after every epoch (a browser reloading it
watches training; the page reloads itself every 10 s until the final version), and the final
version adds the confusion matrix of the test set and the per-layer profile;
``convgraph report DIR`` builds the same page from a checkpoint folder. Everything is inline (CSS,
the Graphviz drawing and the matplotlib curves as SVG): the page needs no network and no other
file.

The page is assembled by small functions, one per section, each escaping what it takes from the
user (names, paths, settings) with ``html.escape``; ``string.Template`` holds the page around
them. A templating library would add a dependency for one fixed page with no loops a template
could express more clearly than these functions.
"""

from __future__ import annotations

import html
import re
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from convgraph.train.loop import Callback

REFRESH_SECONDS = 10


@dataclass
class ReportData:
    """What the page shows; every part but the title may be missing (the page says so)."""

    title: str
    graph: object = None  # the analysed networkx graph
    history: list = field(default_factory=list)  # EpochRecord.as_json() dicts
    settings: dict = field(default_factory=dict)  # the train: settings
    epochs: int | None = None  # of the run (the history may be shorter while it trains)
    device: str | None = None
    data: str | None = None  # the training set, in words
    confusion: object = None  # (classes, classes) counts: rows true, columns predicted
    class_names: list | None = None
    counts: str = "test images"  # what the confusion matrix counts (segmentation: pixels)
    profile: object = None  # (timings, total ms, peak GFLOP/s, peak GB/s) of profile_model
    live: bool = False  # training goes on: the page reloads itself
    note: str = ""  # e.g. where the page came from, or why training stopped
    missing: dict = field(default_factory=dict)  # section -> why it is empty


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _number(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------- sections

def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _absent(text: str) -> str:
    return f'<p class="absent">{_e(text)}</p>'


def _overview(report: ReportData) -> str:
    """The figures a reader looks for first, as cards."""
    from convgraph.shapes import totals
    from convgraph.summary import human
    from convgraph.train.report import best_epoch

    cards = []
    if report.graph is not None:
        sums = totals(report.graph)
        cards += [("parameters", f"{sums['params']:,}"),
                  ("FLOPs per image", human(sums["flops"]))]
    history = report.history
    epochs = f"{len(history)}" + (f" of {report.epochs}" if report.epochs else "")
    cards.append(("epochs", epochs))
    if history:
        last = history[-1]
        if last.get("test_miou") is not None:  # segmentation
            cards.append(("final test mIoU", _number(last["test_miou"])))
        if last.get("test_accuracy") is not None:
            cards.append(("final test " + ("pixel accuracy" if "train_miou" in last
                                           else "accuracy"), _number(last["test_accuracy"])))
        cards.append(("final train loss", _number(last["train_loss"])))
        best = best_epoch(history)
        if best is not None:
            cards.append(("best epoch", f"{best[0]}"))
        cards.append(("training time", f"{sum(r.get('seconds', 0.0) for r in history):.1f} s"))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="value">{_e(value)}</div>'
        f'<div class="label">{_e(label)}</div></div>' for label, value in cards) + "</div>"


def _summary_table(graph) -> str:
    """Layers, output shapes, parameters and FLOPs: summary_json's records."""
    from convgraph.summary import describe_attrs, human, summary_json

    summary = summary_json(graph)
    rows = []
    for record in summary["nodes"]:
        data = graph.nodes[record["name"]]
        op = record["op"]
        if record.get("fused_epilogue"):
            op += f" +{graph.nodes[record['fused_epilogue']]['op']}"
        fused = record.get("fused_into")
        hyper = describe_attrs(data["op"], data["attrs"], graph.graph.get("rounding", "exact"))
        rows.append(
            f'<tr{" class=fused" if fused else ""}><td class="name">{_e(record["name"])}</td>'
            f"<td>{_e(op)}{f' <span class=mark>fused into {_e(fused)}</span>' if fused else ''}"
            f"</td><td>{_e(hyper)}</td>"
            f'<td class="num">{_e("x".join(map(str, record["output_shape"])))}</td>'
            f'<td class="num">{record["params"]:,}</td>'
            f'<td class="num">{_e(human(record["flops"]))}</td></tr>')
    rows.append(f'<tr class="total"><td>total</td><td></td><td></td><td></td>'
                f'<td class="num">{summary["total_params"]:,}</td>'
                f'<td class="num">{_e(human(summary["total_flops"]))}</td></tr>')
    # a deep network's table scrolls in its own box, so the pictures below stay near the top
    return ('<div class="scroll"><table class="summary"><thead><tr><th>layer</th><th>op</th>'
            '<th>settings</th><th>output</th><th>params</th><th>FLOPs</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></div>")


def _inline_svg(svg: str) -> str:
    """SVG text fit for inlining in HTML: from its <svg> tag on (no XML prolog, no DOCTYPE
    naming a DTD's URL), without metadata (matplotlib's names its URLs too)."""
    svg = svg[svg.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)


def _graph_picture(graph) -> str:
    from convgraph.draw import render_svg

    svg = render_svg(graph)
    if svg is None:
        return _absent("Graphviz's 'dot' is not installed (or could not draw this network), so "
                       "the drawing is missing: apt-get install graphviz, then build the page "
                       "again.")
    return f'<div class="picture graph">{_inline_svg(svg)}</div>'


def _curves(report: ReportData) -> str:
    from convgraph.errors import UsageError
    from convgraph.train.report import history_svg

    if not report.history:
        return _absent("No epoch has finished yet.")
    try:
        svg = history_svg(report.history, report.title)
    except UsageError:
        return _absent("matplotlib is not installed, so there are no curves: pip install "
                       "matplotlib (or pip install -e '.[plot]'), then build the page again.")
    return f'<div class="picture curves">{_inline_svg(svg)}</div>'


def _history_table(history: list) -> str:
    from convgraph.train.report import best_epoch

    best = best_epoch(history)
    columns = (("epoch", "epoch", None), ("train loss", "train_loss", 4),
               ("train accuracy", "train_accuracy", 4), ("test loss", "test_loss", 4),
               ("test accuracy", "test_accuracy", 4), ("learning rate", "lr", None),
               ("images/s", "images_per_s", None), ("seconds", "seconds", 1))
    if any("train_miou" in record for record in history):  # segmentation: the mean IoUs too
        columns = columns[:5] + (("train mIoU", "train_miou", 4),
                                 ("test mIoU", "test_miou", 4)) + columns[5:]
    head = "".join(f"<th>{_e(title)}</th>" for title, _, _ in columns)
    rows = []
    for record in history:
        cells = []
        for _, key, digits in columns:
            value = record.get(key)
            if value is None:
                text = "–"
            elif key == "lr":
                text = f"{value:.4g}"
            elif key == "images_per_s":
                text = f"{value:,.0f}"
            else:
                text = f"{value:.{digits}f}" if digits is not None else str(value)
            cells.append(f'<td class="num">{_e(text)}</td>')
        marked = best is not None and record["epoch"] == best[0]
        rows.append(f"<tr{' class=best' if marked else ''}>{''.join(cells)}</tr>")
    caption = (f"<caption>highlighted: epoch {best[0]}, the {_e(best[1])}</caption>"
               if best else "")
    return (f'<table class="history">{caption}<thead><tr>{head}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _heat(fraction: float, diagonal: bool) -> str:
    """A cell's colour: blue for right answers, orange for confusions, deeper for more of the
    row's images."""
    hue = (33, 102, 172) if diagonal else (214, 96, 77)
    text = "#fff" if fraction > 0.55 else "#222"
    alpha = 0.08 + 0.92 * fraction if fraction else 0.0  # an empty cell stays white
    return (f"background:rgba({hue[0]},{hue[1]},{hue[2]},{alpha:.3f});"
            f"color:{text}")


def confusion_table(matrix, class_names=None, what: str = "test images") -> str:
    """The confusion matrix as an HTML table (rows: true class, columns: predicted), each cell
    coloured by its share of the row, with row and column totals; ``what`` it counts."""
    matrix = np.asarray(matrix, dtype=np.int64)
    classes = matrix.shape[0]
    names = [str(n) for n in class_names] if class_names and len(class_names) == classes \
        else [str(c) for c in range(classes)]
    head = "".join(f"<th>{_e(name)}</th>" for name in names)
    rows = []
    for index, (name, row) in enumerate(zip(names, matrix)):
        total = int(row.sum())
        cells = "".join(
            f'<td class="num" style="{_heat(value / total if total else 0.0, index == column)}">'
            f"{int(value)}</td>" for column, value in enumerate(row))
        rows.append(f'<tr><th class="true">{_e(name)}</th>{cells}'
                    f'<td class="num total">{total}</td></tr>')
    sums = "".join(f'<td class="num total">{int(v)}</td>' for v in matrix.sum(axis=0))
    right = int(np.trace(matrix))
    everything = int(matrix.sum())
    rows.append(f'<tr><th class="true">predicted</th>{sums}'
                f'<td class="num total">{everything}</td></tr>')
    accuracy = right / everything if everything else 0.0
    return (f'<table class="confusion"><caption>{right:,} of {everything:,} {_e(what)} right '
            f"({accuracy:.4f}); rows: true class, columns: predicted</caption>"
            f'<thead><tr><th>true \\ predicted</th>{head}<th>total</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _profile_table(profile) -> str:
    """The per-layer forward times of ``profile_model``, with a bar per layer's share."""
    timings, total, peak_flops, peak_bytes = profile
    rows = []
    for timing in timings:
        share = timing.milliseconds / total if total else 0.0
        # another phase (backward) may be recorded beside the forward one
        phase = getattr(timing, "phase", "forward")
        rows.append(
            f'<tr><td class="name">{_e(timing.node)}</td><td>{_e(timing.op)}</td>'
            f"<td>{_e(phase)}</td>"
            f'<td class="num">{timing.milliseconds:.3f}</td>'
            f'<td class="bar"><span style="width:{100 * share:.1f}%"></span></td>'
            f'<td class="num">{getattr(timing, "gflops", 0.0):.1f}</td>'
            f'<td class="num">{getattr(timing, "gbytes", 0.0):.1f}</td>'
            f'<td class="num">{100 * getattr(timing, "peak_fraction", 0.0):.0f}%</td></tr>')
    return ('<table class="profile"><caption>median of 10 passes; device peak measured now: '
            f"{peak_flops:.0f} GFLOP/s (fp32 fma), {peak_bytes:.1f} GB/s (copy)</caption>"
            "<thead><tr><th>layer</th><th>op</th><th>phase</th><th>ms</th><th>share</th>"
            "<th>GFLOP/s</th><th>GB/s</th><th>of peak</th></tr></thead><tbody>"
            + "".join(rows)
            + f'<tr class="total"><td>total</td><td></td><td></td><td class="num">{total:.3f}'
              "</td><td></td><td></td><td></td><td></td></tr></tbody></table>")


def _settings_table(report: ReportData) -> str:
    rows = []
    if report.device:
        rows.append(("device", report.device))
    if report.data:
        rows.append(("training data", report.data))
    if report.graph is not None:
        rows.append(("spec", report.graph.graph.get("source", "")))
    rows += [(key, _setting_text(value)) for key, value in report.settings.items()]
    return ('<dl class="settings">' + "".join(
        f"<div><dt>{_e(key)}</dt><dd>{_e(value)}</dd></div>" for key, value in rows)
            + "</dl>")


def _setting_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "–" if value is None else str(value)


# ---------------------------------------------------------------------------- the page

PAGE = string.Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">$refresh
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$style</style></head>
<body><header><h1>$heading</h1><p class="$state_class">$state</p><nav>$nav</nav></header>
<main>$body</main>
<footer>written by convgraph at $written</footer></body></html>
""")

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
 background:#f4f5f7;color:#1f2328}
header{background:#24292f;color:#fff;padding:18px 32px 10px}
header h1{margin:0 0 4px;font-size:22px;font-weight:600}
header .state{margin:0 0 8px;color:#c9d1d9}
header .state.live{color:#7ee787}
nav a{color:#9ecbff;margin-right:14px;text-decoration:none;font-size:13px}
main{max-width:1240px;margin:0 auto;padding:12px 24px 32px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;margin:16px 0;
 padding:12px 20px 16px}
h2{font-size:17px;margin:4px 0 12px;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 16px;min-width:120px;
 background:#f6f8fa}
.card .value{font-size:20px;font-weight:600}
.card .label{color:#57606a;font-size:12px}
table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 9px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
thead th{background:#f6f8fa;border-bottom:1px solid #d0d7de;position:sticky;top:0}
.scroll{max-height:520px;overflow:auto;display:inline-block;border:1px solid #eaeef2;
 border-radius:6px}
caption{caption-side:top;text-align:left;color:#57606a;padding:0 0 6px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.name{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
tr.total td{font-weight:600;border-top:1px solid #d0d7de}
tr.fused td{color:#6e7781}
tr.best td{background:#fff8c5;font-weight:600}
.mark{font-size:11px;color:#8250df}
.picture{overflow:auto}
.picture svg{max-width:100%;height:auto;display:block}
.graph svg{margin:0 auto}
table.confusion td{min-width:34px;text-align:center;border:1px solid #fff}
table.confusion td.total,table.confusion th.true{background:#f6f8fa;font-weight:600}
td.bar{width:180px}
td.bar span{display:block;height:10px;background:#54aeff;border-radius:2px}
dl.settings{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));
 gap:0 24px;margin:0}
dl.settings div{display:flex;gap:10px;border-bottom:1px solid #eaeef2;padding:3px 0}
dl.settings dt{font-weight:600;min-width:110px}
dl.settings dd{margin:0;overflow-wrap:anywhere}
.absent{color:#6e7781;font-style:italic}
footer{color:#8c959f;font-size:12px;text-align:center;padding:0 0 24px}
"""

SECTIONS = (("overview", "Overview"), ("summary", "Layers"), ("graph", "Network"),
            ("curves", "Training curves"), ("history", "Epochs"),
            ("confusion", "Confusion matrix"), ("profile", "Per-layer profile"),
            ("settings", "Device and settings"))


def _state(report: ReportData) -> str:
    done = len(report.history)
    of = f" of {report.epochs}" if report.epochs else ""
    if report.live:
        return (f"training: {done}{of} epochs done; this page reloads every "
                f"{REFRESH_SECONDS} s")
    return report.note or f"{done}{of} epochs"


def render(report: ReportData) -> str:
    """The whole page as HTML text."""
    graph = report.graph
    no_graph = report.missing.get("graph", "The network is not known (no spec).")
    bodies = {
        "overview": _overview(report),
        "summary": _summary_table(graph) if graph is not None else _absent(no_graph),
        "graph": _graph_picture(graph) if graph is not None else _absent(no_graph),
        "curves": _curves(report),
        "history": _history_table(report.history) if report.history
        else _absent("No epoch has finished yet."),
        "confusion": confusion_table(report.confusion, report.class_names,
                                     report.counts)
        if report.confusion is not None else _absent(report.missing.get(
            "confusion", "Added when training ends (the final test evaluation).")),
        "profile": _profile_table(report.profile) if report.profile is not None
        else _absent(report.missing.get("profile", "Added when training ends.")),
        "settings": _settings_table(report),
    }
    body = "".join(_section(anchor, title, bodies[anchor]) for anchor, title in SECTIONS)
    nav = "".join(f'<a href="#{anchor}">{_e(title)}</a>' for anchor, title in SECTIONS)
    return PAGE.substitute(
        refresh=(f'\n<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
                 if report.live else ""),
        title=_e(f"{report.title} · convgraph run report"),
        style=STYLE, heading=_e(report.title),
        state=_e(_state(report)), state_class="state live" if report.live else "state",
        nav=nav, body=body, written=_e(time.strftime("%Y-%m-%d %H:%M:%S")))


def write_report(path, report: ReportData) -> None:
    """Write the page to ``path`` atomically: a browser reloading it never reads half a page
    (OutputError when it cannot be written)."""
    from convgraph.errors import OutputError
    from convgraph.files import atomic_write

    text = render(report).encode()
    try:
        atomic_write(path, lambda handle: handle.write(text))
    except OSError as exc:
        raise OutputError(f"cannot write the report {path}: {exc.strerror or exc}.",
                          hint="choose a file in a folder you can write.") from None


def check_report_target(path, what: str = "the --report file") -> None:
    """The page's file, checked before any work: writable, and an .html (or .htm) name."""
    from convgraph.display import shown
    from convgraph.errors import UsageError
    from convgraph.files import writable_file

    if Path(path).suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"{what} {shown(path)} is not an .html file.",
                         hint="end the name in .html (e.g. report.html).")
    writable_file(path, what)


# ---------------------------------------------------------------------------- during training

class ReportWriter(Callback):
    """Rewrites the report after every epoch of ``Trainer.fit``; ``finish`` writes the final
    page (with the confusion matrix and the profile)."""

    def __init__(self, path, title: str):
        self.path, self.title = path, title
        self.trainer = None

    def data(self, live: bool) -> ReportData:
        trainer = self.trainer
        train = trainer.train_data
        return ReportData(
            title=self.title, graph=trainer.graph, history=list(trainer.progress.history),
            settings=dict(trainer.settings), epochs=trainer.settings.get("epochs"),
            device=trainer.session.info.label,
            data=f"{train.name} ({len(train.y):,} images)", live=live)

    def on_train_begin(self, trainer) -> None:
        self.trainer = trainer
        write_report(self.path, self.data(live=True))

    def on_epoch_end(self, trainer, record) -> None:
        write_report(self.path, self.data(live=True))

    def finish(self, model=None, note: str = "") -> None:
        """The final page: the test set's confusion matrix (an evaluation with the trained
        weights) and, given the ``model``, its per-layer profile."""
        if self.trainer is None:  # training never began (an error before the first batch)
            return
        report = self.data(live=False)
        report.note = note
        trainer = self.trainer
        if trainer.test_data is not None and not note:
            evaluation = trainer.evaluate(trainer.test_data)
            graph = trainer.graph
            outputs = graph.nodes[graph.graph["output"]]["output"].depth
            report.confusion = evaluation.confusion(max(outputs, trainer.test_data.classes))
            report.class_names = trainer.test_data.class_names
            if evaluation.miou is not None:
                report.counts = "counted test pixels"
        elif trainer.test_data is None:
            report.missing["confusion"] = "This run had no test set."
        if model is not None and not note:
            from convgraph.runtime.inspect import profile_model

            report.profile = profile_model(model)
        if note:
            report.missing["confusion"] = report.missing["profile"] = (
                "Not computed: training did not finish.")
        write_report(self.path, report)


# ---------------------------------------------------------------------------- from a checkpoint

def checkpoint_file(folder) -> Path:
    """The checkpoint ``convgraph report`` reads: ``folder/last.npz``, or ``folder`` itself when
    it is a checkpoint file (DataError when there is none)."""
    from convgraph.errors import DataError
    from convgraph.files import readable_file

    target = Path(folder)
    if target.is_dir():
        last = target / "last.npz"
        if not last.exists():
            raise DataError(f"{target} holds no last.npz, so it is not a checkpoint folder.",
                            hint="give the --checkpoint-dir of a run (or a checkpoint file).")
        target = last
    return readable_file(target, "the checkpoint")


def _header_graph(header: dict):
    """The network a checkpoint's header holds, where it holds the expanded spec (YAML text
    under 'spec_yaml', as ``Model.save`` and newer checkpoints write it), else None."""
    import yaml

    from convgraph.pipeline import analyse

    text = header.get("spec_yaml")
    spec = yaml.safe_load(text) if isinstance(text, str) else None
    return analyse(spec) if isinstance(spec, dict) else None


def report_from_checkpoint(folder, spec=None, overrides=()) -> ReportData:
    """The page's data from a checkpoint folder's last.npz: its history and settings, and the
    network from ``spec`` (a spec, or an analysed graph; checked to be the checkpoint's) or from
    the header's expanded spec.

    >>> write_report("run.html", report_from_checkpoint("runs/a", "net.yaml"))  # doctest: +SKIP
    """
    from convgraph.errors import DataError
    from convgraph.pipeline import analyse
    from convgraph.train.checkpoint import load_checkpoint, network_hash

    path = checkpoint_file(folder)
    graph = None
    if isinstance(spec, nx.DiGraph):
        graph = spec
    elif spec is not None:
        graph = analyse(spec, overrides)
    _, _, header = load_checkpoint(path)
    if graph is not None and header.get("network") != network_hash(graph):
        raise DataError(f"the checkpoint {path} was trained on another network (spec "
                        f"'{header.get('spec', '?')}') than "
                        f"{spec if isinstance(spec, (str, Path)) else repr(graph.graph['name'])}"
                        " describes.",
                        hint="give --spec the spec the run trained (with its --set values).")
    if graph is None:
        graph = _header_graph(header)
    settings = header.get("settings") or {}
    data = header.get("data") or {}
    report = ReportData(
        title=str(header.get("spec", path.stem)), graph=graph,
        history=list(header.get("history") or []), settings=settings,
        epochs=settings.get("epochs"),
        data=f"{data['name']} ({data['size']:,} images)" if "name" in data else None,
        note=f"from the checkpoint {path}: {len(header.get('history') or [])} epochs "
             f"(step {header.get('step', '?')})")
    report.missing = {
        "graph": "This checkpoint does not hold its spec: give it with --spec SPEC to draw "
                 "the network and its layers.",
        "confusion": f"Not recorded in a checkpoint: convgraph eval SPEC --weights {path} "
                     "--confusion prints it.",
        "profile": "Not recorded in a checkpoint: convgraph run SPEC --profile measures it.",
    }
    report.device = "not recorded in the checkpoint"
    return report
