"""One exception tree for everything a user can get wrong.

Every error convgraph raises on bad input is a :class:`ConvgraphError` subclass. The CLI prints
its message as one paragraph and exits with its ``exit_status``; nothing else escapes as a
traceback. The exit statuses (README, "Exit statuses"), one class each:

====  =====================================================================================
0     success
1     ``run --verify`` found a kernel that disagrees with the reference
2     an invalid spec (SpecError, ShapeError) or command-line value (UsageError)
3     the device's compiler rejected the generated kernels (KernelBuildError)
4     no usable device, an unknown device, a device fault, or a network, batch or data set
      the device's or the host's memory cannot hold (refused from the shapes, before
      allocating, with the numbers; DeviceError)
5     a missing, unreadable, corrupt, hostile or unfitting input file: data, weights,
      checkpoint, --predict input (DataError)
6     training diverged: a non-finite loss, weight or gradient (TrainingDiverged)
7     an output cannot be written: a missing or unwritable folder, a file where a folder
      belongs, a full disk (OutputError)
8     a distributed run's ranks disagree (specs, devices, versions, drifted weights) or one
      stopped answering within --mpi-timeout (DistributedError)
129   hung up (SIGHUP), 130 interrupted (Ctrl-C, SIGINT), 143 terminated (SIGTERM): the
      training state saved first where there is a checkpoint folder
70    an internal error: a bug in convgraph, never caused by input
====  =====================================================================================
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a spec file: 1-based line and column, as editors show them."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def shifted(self, columns: int) -> Location:
        """The location ``columns`` characters further along the same line."""
        return Location(self.file, self.line, self.column + columns)


# where a --set value stands: every one at the same place, so errors there are told apart by text
COMMAND_LINE = Location("<command line>", 1, 1)


class ConvgraphError(Exception):
    """Base of every error caused by user input, data or the environment; raise a subclass,
    which says the exit status (the base's own 70 marks a missing one as a bug)."""

    exit_status = 70

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text += f" Fix: {self.hint}"
        return text


class SpecError(ConvgraphError):
    """A spec that cannot be read or does not describe a valid network (exit status 2).

    The message names the file, the line:column of the offending YAML node and, where known,
    the layer, so that an editor can jump straight to it.
    """

    exit_status = 2

    def __init__(
        self,
        message: str,
        *,
        location: Location | None = None,
        layer: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, hint=hint)
        self.location = location
        self.layer = layer

    def __str__(self) -> str:
        prefix = f"{self.location}: " if self.location else ""
        return prefix + self.detail()

    def detail(self) -> str:
        """The message without its location: ``layer 'conv1': ... Fix: ...``."""
        where = f"layer '{self.layer}': " if self.layer else ""
        return where + super().__str__()


MAX_REPORTED = 10  # independent spec errors reported together; past this, the first ten


class SpecErrors(SpecError):
    """Several independent problems of one spec, reported together as one paragraph that
    starts at the first (so that an editor jumps there): ``net.yaml:4:7: 3 errors: layer
    'conv1': ...; line 9:3: ...; line 12:5: ...`` (exit status 2). ``errors``: each one, in
    the order found; ``location``: the first one's."""

    def __init__(self, errors: list[SpecError], complete: bool = True):
        first = errors[0].location
        file = first.file if first else "the spec"
        count = f"{len(errors)} errors" if complete else f"the first {len(errors)} errors"
        parts = [errors[0].detail()]
        parts += [f"{_place(error.location, file)}{error.detail()}" for error in errors[1:]]
        parts = [part.removesuffix(".") for part in parts[:-1]] + parts[-1:]  # '.;' reads ill
        super().__init__(f"{count}: " + "; ".join(parts), location=first)
        self.errors = list(errors)

    def detail(self) -> str:
        return self.message


def _place(location: Location | None, file: str) -> str:
    if location is None:
        return ""
    if location == COMMAND_LINE:
        return "on the command line: " if file != location.file else ""
    if location.file != file:
        return f"{location}: "
    return f"line {location.line}:{location.column}: "


class ErrorCollector:
    """Gathers the independent errors of a spec, so that its author sees them all at once.

    ``with errors.attempt(): ...`` runs one independent unit (a layer, a key); a SpecError in
    it is kept and the work goes on. Errors at the same place are kept once (a block's bad
    setting, met in every copy). The MAX_REPORTED-th error stops the reading at once. An error
    marked ``stops`` (the network grows past every limit) is not caught: nothing after it is
    worth reading.
    """

    def __init__(self, limit: int = MAX_REPORTED):
        self.errors: list[SpecError] = []
        self.limit = limit
        self._places: set = set()
        self._final: SpecError | None = None

    @contextmanager
    def attempt(self):
        try:
            yield
        except SpecError as error:
            if error is self._final or getattr(error, "stops", False):
                raise
            self.add(error)

    def is_final(self, error: BaseException) -> bool:
        """Whether ``error`` is the one raised when the limit was reached."""
        return error is self._final

    def add(self, error: SpecError) -> None:
        for one in getattr(error, "errors", [error]):
            place = one.location or id(one)
            if place == COMMAND_LINE:
                place = (place, one.message)
            if place in self._places:
                continue
            self._places.add(place)
            self.errors.append(one)
            if len(self.errors) >= self.limit:
                self._final = SpecErrors(self.errors, complete=False)
                raise self._final

    def raise_if_any(self) -> None:
        """Raise what was gathered: the error itself when there is one, else SpecErrors."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise SpecErrors(self.errors)


class ShapeError(SpecError):
    """A spec whose layers do not fit together (impossible or non-whole volumes)."""


class KernelBuildError(ConvgraphError):
    """Generated OpenCL code that the device compiler rejected."""

    exit_status = 3


class DeviceError(ConvgraphError):
    """No usable OpenCL device, an unknown device name, or a device fault."""

    exit_status = 4


class DataError(ConvgraphError):
    """A missing, truncated or corrupt data set or checkpoint file."""

    exit_status = 5


class TrainingDiverged(ConvgraphError):
    """The loss became NaN or infinite."""

    exit_status = 6


def suggest(word: str, candidates) -> str:
    """A ' did you mean ...?' clause for an error message, or '' when nothing is close."""
    import difflib  # here, not at the top: the CLI's signal handlers wait for this module

    close = difflib.get_close_matches(str(word).lower(), list(candidates), n=2, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


class UsageError(ConvgraphError):
    """A command-line value out of range or flags that do not go together (exit status 2)."""

    exit_status = 2


class OutputError(ConvgraphError):
    """An output that cannot be written: checked before any work starts (exit status 7)."""

    exit_status = 7


class DistributedError(ConvgraphError):
    """The ranks (or devices) of a data-parallel run disagree, or one stopped answering
    (exit status 8)."""

    exit_status = 8
