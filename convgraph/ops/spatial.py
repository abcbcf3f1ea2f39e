"""Sliding-window arithmetic shared by conv and pool: output extent, padding, rounding, fixes.

Along one axis, a window of ``kernel`` taps spaced ``dilation`` apart covers
``extent = dilation * (kernel - 1) + 1`` inputs; with padding ``before``/``after`` and stride ``S``
the
output size is ``(W - extent + before + after) / S + 1``, as in the ConvNet notes. It must be whole
unless the layer (or the spec) opts into ``floor`` or ``ceil`` rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from convgraph.ops.base import LayerDef, Node


@dataclass(frozen=True)
class Window:
    """How one axis of a conv/pool window maps onto its input."""

    output: int
    pad_before: int
    pad_after: int  # the padding the layer declared (or 'same' resolved to)


def window_extent(kernel: int, dilation: int = 1) -> int:
    return dilation * (kernel - 1) + 1


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same': output ceil(size / stride), any odd extra padding after."""
    output = -(-size // stride)
    total = max((output - 1) * stride + window_extent(kernel, dilation) - size, 0)
    return total // 2, total - total // 2


def slide(
    layer: LayerDef,
    axis: str,
    size: int,
    kernel: int,
    stride: int,
    pad,
    dilation: int,
    rounding: str,
    max_pad: int | None = None,
) -> Window:
    """Output size along ``axis`` ('width' or 'height'), or a ShapeError that says how to fix it.

    ``max_pad`` is the most padding the op allows (pooling: half the window); fixes respect it."""
    extent = window_extent(kernel, dilation)
    if pad == "same":
        before, after = same_padding(size, kernel, stride, dilation)
        return Window(-(-size // stride), before, after)
    padded = size + 2 * pad
    if extent > padded:
        what = f"kernel {axis} {kernel}" + (f" (dilated to {extent})" if dilation > 1 else "")
        raise layer.error(
            f"{what} is larger than its padded input {axis} {size} + 2*{pad} = {padded}.",
            attr="size",
            hint=f"use a kernel of at most {padded}, or pad "
            f"{math.ceil((extent - size) / 2)} or more, or pad: same.",
        )
    span = padded - extent
    if span % stride == 0:
        return Window(span // stride + 1, pad, pad)
    if rounding == "floor":
        return Window(span // stride + 1, pad, pad)
    if rounding == "ceil":
        output = -(-span // stride) + 1
        if (output - 1) * stride >= size + pad:  # last window must start inside the input
            output -= 1
        return Window(output, pad, pad)
    formula = f"({size} - {extent} + 2*{pad})/{stride} + 1 = {span / stride + 1:g}"
    raise layer.error(
        f"output {axis} {formula} is not a whole number.",
        attr="stride" if "stride" in layer.attr_locations else None,
        hint=_whole_fix(size, kernel, dilation, stride, pad, max_pad),
    )


def _whole_fix(
    size: int, kernel: int, dilation: int, stride: int, pad: int, max_pad: int | None = None
) -> str:
    """What makes the output whole: first what a ported PyTorch layer means (PyTorch floors the
    output size; 'same' keeps ceil(W / S)), then the exact alternatives: the nearest padding
    (or kernel size) and the largest stride that divide."""
    extent = window_extent(kernel, dilation)
    span = size + 2 * pad - extent
    ceil = -(-span // stride) + 1
    if (ceil - 1) * stride >= size + pad:  # as slide: the last window starts inside the input
        ceil -= 1
    ported = (
        f"set 'rounding: floor' ({span // stride + 1}) as PyTorch computes it, on this layer "
        f"or for the whole spec, or pad: same ({-(-size // stride)}), or 'rounding: ceil' "
        f"({ceil})"
    )
    exact = []
    best = _nearest_whole_pad(size, extent, stride, pad, max_pad)
    if best is not None:
        exact.append(f"pad {best} would make it {(size + 2 * best - extent) // stride + 1}")
    if best is None and dilation == 1:  # parity: no padding helps, a kernel one off does
        for k in (kernel - 1, kernel + 1):
            if k >= 1 and size + 2 * pad >= k and (size + 2 * pad - k) % stride == 0:
                exact.append(f"size {k} would make it {(size + 2 * pad - k) // stride + 1}")
                break
    smaller = _largest_divisor_below(span, stride)
    if smaller is not None:
        exact.append(f"stride {smaller} would make it {span // smaller + 1}")
    return ported + ("; or, to keep it exact: " + "; ".join(exact) if exact else "") + "."


def _nearest_whole_pad(
    size: int, extent: int, stride: int, pad: int, max_pad: int | None
) -> int | None:
    """The padding p nearest ``pad`` (the smaller of two) with 0 <= p < extent + stride, p <=
    max_pad, size + 2p >= extent and (size + 2p - extent) % stride == 0, or None.

    Solved rather than searched (sizes reach 2**20): the solutions of 2p = extent - size
    (mod stride) are one residue class modulo ``step``.
    """
    low = max(0, -(-(extent - size) // 2))
    high = extent + stride - 1 if max_pad is None else min(extent + stride - 1, max_pad)
    target = extent - size
    if stride % 2 == 0 and target % 2:
        return None
    step = stride if stride % 2 else stride // 2
    first = target * pow(2, -1, stride) % stride if stride % 2 else (target // 2) % step
    near = []
    for anchor in (low, pad, high):  # the members of the class next to each end and to pad
        k = (anchor - first) // step
        near += [first + k * step, first + (k + 1) * step]
    found = [p for p in near if low <= p <= high]
    return min(found, key=lambda p: (abs(p - pad), p)) if found else None


def _largest_divisor_below(number: int, bound: int) -> int | None:
    """The largest divisor of ``number`` (>= 0) below ``bound``, or None."""
    if number == 0:
        return bound - 1 if bound > 1 else None
    best = None
    for d in range(1, math.isqrt(number) + 1):
        if number % d == 0:
            for divisor in (d, number // d):
                if divisor < bound and (best is None or divisor > best):
                    best = divisor
    return best


def reference_windows(x, node: Node, fill: float = 0.0, declared_fill: float | None = None):
    """(N, C, H, W) -> the (N, C, OUT_H, OUT_W, kh, kw) windows a conv/pool node reads (a view).

    Padding takes ``fill``; under ceil rounding the overhang past the declared padding takes
    ``fill`` too, unless ``declared_fill`` is given, which then fills only the declared padding.
    """
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    attrs, derived, out = node.attrs, node.derived, node.output
    (kw, kh), (sw, sh) = attrs["size"], attrs["stride"]
    dw, dh = attrs.get("dilation", (1, 1))
    ext_h, ext_w = window_extent(kh, dh), window_extent(kw, dw)
    top, left = derived["pad_top"], derived["pad_left"]
    need_h, need_w = (out.height - 1) * sh + ext_h, (out.width - 1) * sw + ext_w
    height, width = x.shape[2], x.shape[3]
    if declared_fill is not None:
        x = np.pad(
            x,
            ((0, 0), (0, 0), (top, derived["pad_bottom"]), (left, derived["pad_right"])),
            constant_values=declared_fill,
        )
        top = left = 0
        height, width = x.shape[2], x.shape[3]
    bottom, right = max(need_h - height - top, 0), max(need_w - width - left, 0)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    padded = padded[:, :, :need_h, :need_w]
    view = sliding_window_view(padded, (ext_h, ext_w), axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw]


def widest_dividing(extent: int, largest: int) -> int:
    """The largest power of two up to ``largest`` (itself one) that divides ``extent``: vector
    widths and tiles that leave no remainder."""
    width = largest
    while extent % width:
        width //= 2
    return width


def choose_tile(extent: int, largest: int) -> int:
    """Pixels per work-item along a row: a divisor of the row near ``largest`` if there is one
    (no partial tile), else ``largest`` (the last tile is guarded)."""
    if extent <= largest:
        return extent
    for tile in range(largest, (largest + 1) // 2 - 1, -1):
        if extent % tile == 0:
            return tile
    return largest


def reference_unwindow(window_grads, node: Node, input_shape):
    """The adjoint of reference_windows: add each window's (N, C, OUT_H, OUT_W, kh, kw) gradients
    back onto the (N, C, H, W) input they were read from (padding dropped)."""
    import numpy as np

    attrs, derived, out = node.attrs, node.derived, node.output
    (kw, kh), (sw, sh) = attrs["size"], attrs["stride"]
    dw, dh = attrs.get("dilation", (1, 1))
    top, left = derived["pad_top"], derived["pad_left"]
    height, width = input_shape[2], input_shape[3]
    need_h = (out.height - 1) * sh + window_extent(kh, dh)
    need_w = (out.width - 1) * sw + window_extent(kw, dw)
    padded = np.zeros(input_shape[:2] + (max(need_h, top + height), max(need_w, left + width)))
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i * dh:i * dh + sh * (out.height - 1) + 1:sh,
                   j * dw:j * dw + sw * (out.width - 1) + 1:sw] += window_grads[..., i, j]
    return padded[:, :, top:top + height, left:left + width]


def covering_pads(node: Node) -> tuple[int, int, int, int]:
    """(top, left, bottom, right): the zero padding after which floor rounding, ONNX's and
    PyTorch's rule, gives this conv/pool node's output size. The declared padding before the
    input; after it, as far as the last window reaches (past the declared padding under ceil
    rounding, short of it where floor rounding leaves rows unread), as reference_windows pads."""
    attrs, derived, out = node.attrs, node.derived, node.output
    (kw, kh), (sw, sh) = attrs["size"], attrs["stride"]
    dw, dh = attrs.get("dilation", (1, 1))
    x = node.input_volumes[0]
    top, left = derived["pad_top"], derived["pad_left"]
    bottom = max((out.height - 1) * sh + window_extent(kh, dh) - x.height - top, 0)
    right = max((out.width - 1) * sw + window_extent(kw, dw) - x.width - left, 0)
    return top, left, bottom, right
