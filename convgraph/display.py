"""Untrusted text made safe to print: what a spec, a file name or a data set says is shown as it
is, never interpreted by the terminal or by rich.

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
