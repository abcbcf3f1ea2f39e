"""Readers for hyperparameter values: each takes a raw YAML value and returns it normalised.

A reader raises ValueError with what was expected; the spec parser turns that into a located
SpecError. Pairs are written width x height (``5x3``, ``[5, 3]``) as volumes are, and stored as
``(width, height)`` tuples.
"""

from __future__ import annotations

import re

from convgraph.core import Volume

MAX_SIZE = 1 << 20  # no extent, count or size in a spec may exceed this

_PAIR = re.compile(r"([0-9]+)\s*[xX]\s*([0-9]+)")
_VOLUME = re.compile(r"([0-9]+)\s*[xX]\s*([0-9]+)\s*[xX]\s*([0-9]+)")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(minimum: int = 0, maximum: int = MAX_SIZE):
    def read(value):
        if not _is_int(value):
            raise ValueError(f"a whole number from {minimum} to {maximum}")
        if not minimum <= value <= maximum:
            raise ValueError(f"a whole number from {minimum} to {maximum}")
        return value

    return read


def number(
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_min: bool = False,
    exclusive_max: bool = False,
):
    low = "" if minimum is None else ("> " if exclusive_min else ">= ") + f"{minimum:g}"
    high = "" if maximum is None else ("< " if exclusive_max else "<= ") + f"{maximum:g}"
    expects = (
        "a number"
        + (f" {low}" if low else "")
        + (" and" if low and high else "")
        + (f" {high}" if high else "")
    )

    def read(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(expects)
        value = float(value)
        if minimum is not None and (value < minimum or (exclusive_min and value == minimum)):
            raise ValueError(expects)
        if maximum is not None and (value > maximum or (exclusive_max and value == maximum)):
            raise ValueError(expects)
        return value

    return read


def boolean(value):
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def choice(*options: str):
    def read(value):
        if not isinstance(value, str) or value.lower() not in options:
            raise ValueError("one of " + ", ".join(options))
        return value.lower()

    return read


def pair(minimum: int = 1):
    """An int, a 'WxH' string or a [w, h] list -> (w, h)."""
    expects = f"a whole number >= {minimum}, 'WxH' (e.g. 5x3) or [w, h]"

    def read(value):
        if _is_int(value):
            w = h = value
        elif isinstance(value, str) and _PAIR.fullmatch(value.strip()):
            w, h = (int(g) for g in _PAIR.fullmatch(value.strip()).groups())
        elif isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value):
            w, h = value
        else:
            raise ValueError(expects)
        if not (minimum <= w <= MAX_SIZE and minimum <= h <= MAX_SIZE):
            raise ValueError(expects)
        return (w, h)

    return read


def padding(value):
    """'same', 'valid', or a pair of paddings (each side gets it) -> 'same' or (w, h)."""
    if isinstance(value, str) and value.lower() in ("same", "valid"):
        return "same" if value.lower() == "same" else (0, 0)
    try:
        return pair(minimum=0)(value)
    except ValueError:
        raise ValueError("same, valid, a whole number >= 0, 'WxH' or [w, h]") from None


def volume(value):
    """'WxHxD' or [w, h, d] -> Volume."""
    expects = "a volume 'WxHxD' such as 32x32x3, or [w, h, d]"
    if isinstance(value, str) and _VOLUME.fullmatch(value.strip()):
        dims = tuple(int(g) for g in _VOLUME.fullmatch(value.strip()).groups())
    elif isinstance(value, list) and len(value) == 3 and all(_is_int(v) for v in value):
        dims = tuple(value)
    else:
        raise ValueError(expects)
    if not all(1 <= d <= MAX_SIZE for d in dims):
        raise ValueError(expects + f", each extent from 1 to {MAX_SIZE}")
    return Volume(*dims)


def groups(value):
    """A group count >= 1, or 'depthwise' (one group per input channel)."""
    if isinstance(value, str) and value.lower() == "depthwise":
        return "depthwise"
    try:
        return integer(1)(value)
    except ValueError:
        raise ValueError("a whole number >= 1 or depthwise") from None


ROUNDING = choice("exact", "floor", "ceil")


def pair_to_yaml(value: tuple[int, int]):
    """Inverse of :func:`pair` for writing specs back: 3 or '5x3'."""
    w, h = value
    return w if w == h else f"{w}x{h}"
