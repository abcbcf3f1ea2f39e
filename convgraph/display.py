"""What convgraph prints, and how: untrusted text made safe to print, and the one output policy
every table follows (a terminal's width, plain text into a pipe or a file; further down).

What a spec, a file name or a data set says is shown as it is, never interpreted by the
terminal or by rich.

A model name, a layer name or a path comes from a user's file or command line. Printed as it
is, ``[/x]`` is a rich closing tag (a MarkupError), ``\\x1b[2J`` clears the terminal, a C1
character such as ``\\x9b`` starts an escape sequence on many terminals, and a lone surrogate
(what Python makes of a non-UTF-8 file name) cannot be encoded at all. ``shown`` escapes all of
these; ``markup_safe`` also escapes rich's markup, for text that goes through a rich console.

>>> shown("net\\x1b[31m")
'net\\\\x1b[31m'
>>> markup_safe("[/oops]")
'\\\\[/oops]'
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field

# bidirectional overrides and isolates reorder what follows them on screen ("Trojan source")
_BIDI = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
         "\u2069"}


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a non-UTF-8 name (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shown(text) -> str:
    """``text`` (a str, bytes or a path) as printable text: control characters (C0 but tab, DEL,
    C1), line and paragraph separators, lone surrogates and bidirectional overrides written as
    ``\\xNN``/``\\uNNNN`` escapes, bytes decoded as file names are (UTF-8, undecodable bytes as
    ``\\xNN``); the rest as is.

    >>> shown(b"caf\\xe9.yaml")
    'caf\\\\xe9.yaml'
    """
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    elif not isinstance(text, str):
        text = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
    if text.isprintable():
        return text
    out = []
    for char in text:
        # what a terminal acts on (C0, DEL, C1), what breaks a line (U+2028, U+2029), what
        # cannot be encoded (lone surrogates) and what reorders the text (bidi controls)
        unsafe = (unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp")
                  or char in _BIDI) and char != "\t"
        out.append(_escaped(char) if unsafe else char)
    return "".join(out)


def markup_safe(text) -> str:
    """``shown(text)`` with rich's markup escaped, for text printed through a rich console
    (a table cell, a title, ``console.print``).

    >>> markup_safe("spec [/x].yaml")
    'spec \\\\[/x].yaml'
    """
    from rich.markup import escape

    return escape(shown(text))


# ---------------------------------------------------------------------------- the output policy
#
# One policy for every table convgraph prints. A terminal gets its own width: the full table
# when it fits and the terminal is at least COMPACT_BELOW columns wide, else a compact table
# (secondary columns dropped, short headers, no vertical rules), else one record per row. A pipe
# or a file gets plain text: no box-drawing, no colour, every row on one line at its natural
# width, so grep, awk and diff see whole rows. No layout ever cuts a cell: rich's ellipsis is
# never reached, because a table that would need it is printed in the next layout instead.

COMPACT_BELOW = 100  # columns: narrower terminals get the compact layout
PIPE_WIDTH = 100_000  # "no width": rows of a pipe or a file are never wrapped
ITEM_GAP = "  "  # between the items of an ``items`` cell


@dataclass(frozen=True)
class Column:
    """A table column. ``short`` is its header in the compact layouts; a ``secondary`` column is
    left out of them; a ``wrap`` column holds free text that may break between words; the cells
    of an ``items`` column are items ('2: triangle 71.3%') joined by ITEM_GAP: where a line
    cannot hold them all, each goes on a line of its own, never broken inside (every other
    cell is kept on one line, whole)."""

    header: str
    justify: str = "left"
    short: str | None = None
    secondary: bool = False
    wrap: bool = False
    items: bool = False

    @property
    def compact_header(self) -> str:
        return self.short or self.header


@dataclass
class Listing:
    """What a table says, apart from how it is drawn: a title, columns, rows of plain text
    (untrusted text is fine: it is shown escaped, never read as markup) and the total rows
    printed under a rule. A row of None is a rule between groups of rows."""

    title: str
    columns: list[Column]
    rows: list[list[str]] = field(default_factory=list)
    totals: list[list[str]] = field(default_factory=list)


def output_console(stderr: bool = False, file=None):
    """The console a command prints through: a terminal (its width, colour), or plain text for a
    pipe or a file (no colour, no wrapping). ``file`` is a handle to print to instead."""
    from rich.console import Console

    probe = Console(stderr=stderr, file=file)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, file=file, width=PIPE_WIDTH, color_system=None,
                   highlight=False, soft_wrap=True, emoji=False)


def is_plain(console) -> bool:
    """Whether ``console`` writes to a pipe or a file (plain text) rather than a terminal."""
    return not console.is_terminal


def print_listing(listing: Listing, console) -> None:
    """``listing`` in the layout the console calls for (see the output policy above). The
    title is a line of its own, as wide as the console (not the table) allows."""
    from rich.text import Text

    if is_plain(console):
        console.file.write(shown(listing.title) + "\n")
        _print_plain(_rich_table(listing, "plain"), console)
        return
    console.print(Text(shown(listing.title), style="bold"))
    width = console.width
    layouts = ("full", "compact") if width >= COMPACT_BELOW else ("compact",)
    stacking = (False, True) if any(c.items for c in listing.columns) else (False,)
    for layout in layouts:
        for stacked in stacking:
            if _fits(listing, layout, console, width, stacked):
                console.print(_rich_table(listing, layout, stacked=stacked))
                return
    _print_records(listing, console)


def _cell(text):
    from rich.text import Text

    return Text(shown(text))


def _rich_table(listing: Listing, layout: str, narrowest: bool = False, stacked: bool = False):
    """The rich Table of ``listing`` (without its title) for the layout 'full', 'compact' or
    'plain'; ``stacked`` puts each item of an items cell on a line of its own; ``narrowest``
    also breaks free text at every space (to measure the least width the table needs)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    columns = [c for c in listing.columns if layout != "compact" or not c.secondary]
    keep = [listing.columns.index(c) for c in columns]
    style = {"full": {"box": box.HEAVY_HEAD},
             # padding on the right only: two columns between cells instead of three
             "compact": {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False,
                         "padding": (0, 1, 0, 0)},
             "plain": {"box": None, "show_edge": False, "pad_edge": False,
                       "header_style": None}}[layout]
    table = Table(**style)
    for column in columns:
        header = column.compact_header if layout == "compact" else column.header
        # free text wraps only where a terminal is too narrow; a pipe's rows stay whole
        wraps = column.wrap and layout != "plain"  # items never wrap: they stack
        table.add_column(_cell(header), justify=column.justify, no_wrap=not wraps,
                         overflow="fold")

    def cell(column: Column, text: str):
        if column.items and stacked:
            return Text("\n".join(shown(item) for item in text.split(ITEM_GAP)))
        if column.wrap and narrowest:
            return Text("\n".join(shown(text).split()))
        return _cell(text)

    def cells(row: list[str]) -> list:
        return [cell(listing.columns[i], row[i]) for i in keep]

    for row in listing.rows:
        if row is None:
            table.add_section()
        else:
            table.add_row(*cells(row))
    if listing.totals:
        table.add_section()
        for row in listing.totals:
            table.add_row(*cells(row))
    return table


def _fits(listing: Listing, layout: str, console, width: int, stacked: bool = False) -> bool:
    """Whether ``listing`` drawn in ``layout`` fits ``width`` columns with no cell cut: its
    narrowest form (every free-text cell broken at each space, every other cell whole),
    measured by drawing it at no width limit."""
    from rich.cells import cell_len
    from rich.console import Console

    probe = Console(width=PIPE_WIDTH, color_system=None, file=console.file)
    with probe.capture() as captured:
        probe.print(_rich_table(listing, layout, narrowest=True, stacked=stacked))
    lines = captured.get().splitlines()
    return max((cell_len(line.rstrip()) for line in lines), default=0) <= width


def _print_plain(table, console) -> None:
    """A box-less table as plain lines without trailing blanks."""
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        console.file.write(line.rstrip() + "\n")
    console.file.flush()


def _print_records(listing: Listing, console) -> None:
    """One record per row, for a terminal too narrow for any table: the first two columns of
    the compact layout on a line, then the other cells as ``header value`` pairs, each pair
    whole, as many to a line as fit."""
    from rich.cells import cell_len
    from rich.text import Text

    width = console.width
    lead = [i for i, column in enumerate(listing.columns) if not column.secondary][:2]
    rest = [i for i in range(len(listing.columns)) if i not in lead]
    for row in listing.rows + listing.totals:
        if row is None:
            continue
        head = "  ".join(shown(row[i]) for i in lead if row[i])
        console.print(Text(head, style="bold"), overflow="fold")
        pairs = []
        for i in (i for i in rest if row[i]):
            column = listing.columns[i]
            items = row[i].split(ITEM_GAP) if column.items else [row[i]]
            pairs += [f"{column.compact_header} {shown(items[0])}", *map(shown, items[1:])]
        line = ""
        for pair in pairs:
            candidate = f"{line}   {pair}" if line else f"  {pair}"
            if line and cell_len(candidate) > width:
                console.print(Text(line), overflow="fold")
                candidate = f"  {pair}"
            line = candidate
        if line:
            console.print(Text(line), overflow="fold")


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """'1 epoch', '2 epochs', '1,024 images': a count and its noun, agreeing.

    >>> plural(1, "kernel"), plural(3, "kernel"), plural(2, "batch", "batches")
    ('1 kernel', '3 kernels', '2 batches')
    """
    word = noun if count == 1 else (plural_form or noun + "s")
    return f"{count:,} {word}"
