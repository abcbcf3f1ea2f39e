"""What a person sees of training: a progress bar per epoch, one line per epoch, plots."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)

from convgraph.display import plural
from convgraph.errors import UsageError


class EpochBar:
    """A rich progress bar for the phase in progress on a terminal (nothing into a pipe): the
    first launch's kernel compile, then each epoch's batches with labelled figures (img/s,
    loss, acc, ETA), then its evaluation. Narrow terminals drop the bar, then the speed."""

    def __init__(self, out: Console, epochs: int):
        self.out, self.epochs = out, epochs
        width = out.width
        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if width >= 100:
            columns.append(BarColumn(bar_width=min(40, width - 80)))
        columns += [TextColumn("{task.fields[count]}"),
                    TextColumn("{task.fields[figures]}"), TimeRemainingLabelled()]
        self.wide = width >= 72
        self.bar = Progress(*columns, console=out, transient=True,
                            disable=not out.is_terminal)
        self.task = None
        self.epoch = None

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def _show(self, description: str, total: int | None = None, done: int = 0,
              count: str = "", figures: str = "") -> None:
        """One phase's line; an ETA only where there is a count of batches to go."""
        if self.task is None:
            self.task = self.bar.add_task(description, total=total, count=count,
                                          figures=figures, timed=total is not None)
        self.bar.update(self.task, description=description, total=total, completed=done,
                        count=count, figures=figures, timed=total is not None)

    def compiling(self, kernels: int) -> None:
        """The first step is on its way: the driver compiles the kernels as they launch."""
        self._show(f"compiling {plural(kernels, 'kernel')} (first launch)")

    def update(self, epoch: int, done: int, total: int, loss: float, accuracy: float,
               speed: float) -> None:
        if self.epoch != epoch:
            self.epoch = epoch
            if self.task is not None:  # the ETA of each epoch starts afresh
                self.bar.reset(self.task)
        speed_text = f"{speed:,.0f} img/s  " if self.wide else ""
        self._show(f"epoch {epoch + 1}/{self.epochs}", total, done,
                   f"{done}/{total}{' batches' if self.wide else ''}",
                   f"{speed_text}loss {loss:.4f}  acc {accuracy:.4f}")

    def evaluating(self, images: int) -> None:
        """The epoch's batches are done; its test set is being evaluated."""
        self._show(f"evaluating {plural(images, 'test image')}")


class TimeRemainingLabelled(TimeRemainingColumn):
    """rich's time remaining, labelled 'ETA', and blank where there is no estimate."""

    max_refresh = None  # rich holds a render for 0.5 s: the evaluation line would keep an ETA

    def render(self, task):
        from rich.text import Text

        if not task.fields.get("timed") or task.total is None:
            return Text("")
        remaining = super().render(task)
        return Text("ETA ") + remaining


def first_step_line(kernels: int, seconds: float, epoch: int = 1) -> str:
    """The first-launch compile, as its own line before the first epoch's (``epoch``, 1-based:
    a resumed run starts in the middle)."""
    return (f"compiling {plural(kernels, 'kernel')} (first launch)... done in {seconds:.2f} s "
            f"(not counted in epoch {epoch}'s images/s)")


def epoch_line(record) -> str:
    if getattr(record, "train_miou", None) is not None:
        return segmentation_epoch_line(record)
    test = (f", test loss {record.test_loss:.4f}, test accuracy {record.test_accuracy:.4f}"
            if record.test_accuracy is not None else "")
    return (f"epoch {record.epoch}: train loss {record.train_loss:.4f}, train accuracy "
            f"{record.train_accuracy:.4f}{test}; {record.images_per_s:,.0f} images/s, "
            f"{record.seconds:.1f} s, lr {record.lr:.4g}")


def segmentation_epoch_line(record) -> str:
    """An epoch of per-pixel training: accuracy over the counted pixels and mean IoU."""
    test = (f", test loss {record.test_loss:.4f}, test pixel accuracy "
            f"{record.test_accuracy:.4f}, test mIoU {record.test_miou:.4f}"
            if record.test_miou is not None else "")
    return (f"epoch {record.epoch}: train loss {record.train_loss:.4f}, pixel accuracy "
            f"{record.train_accuracy:.4f}, mIoU {record.train_miou:.4f}{test}; "
            f"{record.images_per_s:,.0f} images/s, {record.seconds:.1f} s, lr {record.lr:.4g}")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed.",
                         hint="pip install matplotlib (or pip install -e '.[plot]').") from None
    return plt


def check_plot_target(path) -> None:
    """What ``plot_history`` needs, checked before training: matplotlib, a format it writes
    (the file's suffix) and a file that can be written (UsageError, OutputError)."""
    from convgraph.display import shown
    from convgraph.files import writable_file

    writable_file(path, "the --plot file")
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix not in formats:
        raise UsageError(f"--plot {shown(path)}: matplotlib cannot write "
                         f"'{shown(suffix) or 'a file without a suffix'}'.",
                         hint=f"end the name in one of {', '.join('.' + f for f in formats)} "
                              "(e.g. curves.png).")


def best_epoch(history: list[dict]) -> tuple[int, str] | None:
    """The epoch to mark on the curves, and why: the best test accuracy where the history has
    test figures, else the lowest training loss (the first such epoch on a tie)."""
    tested = [r for r in history if r.get("test_accuracy") is not None]
    if tested:
        best = max(tested, key=lambda r: r["test_accuracy"])
        return best["epoch"], f"best test accuracy {best['test_accuracy']:.4f}"
    if history:
        best = min(history, key=lambda r: r["train_loss"])
        return best["epoch"], f"lowest train loss {best['train_loss']:.4f}"
    return None


def history_figure(history: list[dict], title: str):
    """Three panels per epoch: loss and accuracy (train and test), and the learning rate; the
    best epoch (``best_epoch``) marked on each with a vertical line. Epoch ticks are whole
    numbers. Returns the matplotlib Figure (the caller saves and closes it)."""
    from matplotlib.ticker import MaxNLocator

    from convgraph.display import shown

    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    figure, (loss_axis, accuracy_axis, rate_axis) = plt.subplots(1, 3, figsize=(13, 3.8))
    loss_axis.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    accuracy_axis.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train")
    if any(r.get("test_loss") is not None for r in history):
        loss_axis.plot(epochs, [r.get("test_loss") for r in history], "s-", label="test")
        accuracy_axis.plot(epochs, [r.get("test_accuracy") for r in history], "s-",
                           label="test")
    # histories written before the learning rate was recorded have no 'lr'
    rates = [r.get("lr") for r in history]
    if any(rate is not None for rate in rates):
        rate_axis.plot(epochs, rates, "o-", color="tab:green", label="learning rate")
    best = best_epoch(history)
    for axis, name in ((loss_axis, "loss"), (accuracy_axis, "accuracy"),
                       (rate_axis, "learning rate")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:  # half an epoch either side: one epoch alone still gets a whole-number tick
            axis.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        axis.grid(alpha=0.3)
        if best is not None:  # the accuracy panel says why this epoch is the best
            axis.axvline(best[0], color="tab:red", linestyle="--", linewidth=1,
                         label=f"best: epoch {best[0]}" + (
                             f"\n({best[1]})" if axis is accuracy_axis else ""))
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    # the title holds the model's and the data set's names: '$' would start matplotlib's
    # mathtext ('$\\frac{$' fails to parse at savefig), control characters print as boxes
    figure.suptitle(shown(title).replace("$", r"\$"))
    figure.tight_layout()
    return figure


def history_svg(history: list[dict], title: str) -> str:
    """The curves of ``history_figure`` as SVG text, for inlining in a page."""
    import io

    plt = _pyplot()
    figure = history_figure(history, title)
    try:
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def plot_history(history: list[dict], path: str, title: str) -> None:
    """Loss, accuracy and learning-rate curves per epoch (``history_figure``), as an image."""
    from convgraph.errors import OutputError

    plt = _pyplot()
    figure = history_figure(history, title)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise OutputError(f"cannot write the --plot file {path}: {exc.strerror or exc}.",
                          hint="choose a file in a folder you can write.") from None
    finally:
        plt.close(figure)
