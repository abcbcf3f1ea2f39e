"""How an activation volume is stored on the device: NHWC, with a zero halo and padded channels.

A batch of volumes WxHxD is stored as (N, alloc_h, alloc_w, stride_c): each image surrounded by
a zero halo as wide as the largest padding any convolution reading it needs (so conv inner loops
never check bounds), and channels padded to a multiple of the vector width the kernels use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from convgraph.core import Volume
from convgraph.ops.base import REGISTRY
from convgraph.ops.spatial import widest_dividing

MAX_VECTOR = 16


def channel_stride(depth: int) -> int:
    """Channels padded to a multiple of 16, or to the next power of two below that."""
    if depth >= MAX_VECTOR:
        return -(-depth // MAX_VECTOR) * MAX_VECTOR
    stride = 1
    while stride < depth:
        stride *= 2
    return stride


def vector_width(stride: int) -> int:
    """The widest OpenCL vector (1, 2, 4, 8, 16) that divides ``stride``."""
    return widest_dividing(stride, MAX_VECTOR)


@dataclass(frozen=True)
class Layout:
    volume: Volume
    stride_c: int
    halo: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    planar: ClassVar[bool] = False  # (N, D, H, W) rather than NHWC: PlanarLayout

    @property
    def alloc_h(self) -> int:
        return self.volume.height + self.halo[0] + self.halo[1]

    @property
    def alloc_w(self) -> int:
        return self.volume.width + self.halo[2] + self.halo[3]

    @property
    def image_elements(self) -> int:
        return self.alloc_h * self.alloc_w * self.stride_c

    def bytes_for(self, batch: int) -> int:
        return 4 * batch * self.image_elements

    def defines(self, prefix: str) -> dict:
        """The macros common.cl's AT(prefix, n, h, w, c) reads."""
        return {
            f"{prefix}_ALLOC_H": self.alloc_h,
            f"{prefix}_ALLOC_W": self.alloc_w,
            f"{prefix}_HALO_TOP": self.halo[0],
            f"{prefix}_HALO_LEFT": self.halo[2],
            f"{prefix}_STRIDE_C": self.stride_c,
        }

    def with_halo(self, need: tuple[int, int, int, int]) -> Layout:
        widest = tuple(max(a, b) for a, b in zip(self.halo, need))
        return type(self)(self.volume, self.stride_c, widest)

    def host_shape(self, batch: int) -> tuple[int, int, int, int]:
        """A batch of this layout as a host array: (N, alloc_h, alloc_w, stride_c)."""
        return (batch, self.alloc_h, self.alloc_w, self.stride_c)

    def host_array(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """The first ``n`` images of ``out`` (an earlier pack's array of at least n images of
        this layout), else a new zero-filled array of n images."""
        shape = self.host_shape(n)
        if out is None or out.shape[1:] != shape[1:] or out.shape[0] < n:
            out = np.zeros(shape, np.float32)
        return out[:n]

    def pack(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(N, D, H, W) array -> the device layout (N, alloc_h, alloc_w, stride_c), float32.
        ``out``, an earlier result for at least N images, is reused: only its first N images'
        interiors are written (their halo and padding channels are still zero: a pass saves
        an allocation and a fill) and that part of it is returned."""
        n = x.shape[0]
        out = self.host_array(n, out)
        top, _, left, _ = self.halo
        h, w, d = self.volume.height, self.volume.width, self.volume.depth
        interior = out[:, top:top + h, left:left + w]
        # A whole transposed assignment walks the D channels innermost (3 for RGB): numpy's
        # loop then copies 3 floats at a time. A channel at a time copies rows of W floats,
        # over a few images at once so that what is written stays in the cache: 3x faster for
        # 64 CIFAR images (213 -> 75 us), 2x for 256 (938 -> 430-460 us; 2026-12-02).
        images = max(1, (1 << 19) // (4 * self.image_elements))  # 512 KiB of output a part
        for start in range(0, n, images):
            part, source = interior[start:start + images], x[start:start + images]
            if d > 4:  # wide enough that numpy's own order copies runs of channels
                part[..., :d] = source.transpose(0, 2, 3, 1)
                continue
            for channel in range(d):
                part[..., channel] = source[:, channel]
        return out

    def unpack(self, data: np.ndarray, batch: int) -> np.ndarray:
        """The device layout -> (N, D, H, W) float32, always a new array (``data`` may be
        reused by the next read: what is returned must not change with it)."""
        data = data[: batch * self.image_elements].reshape(
            batch, self.alloc_h, self.alloc_w, self.stride_c)
        top, _, left, _ = self.halo
        h, w, d = self.volume.height, self.volume.width, self.volume.depth
        return np.array(data[:, top:top + h, left:left + w, :d].transpose(0, 3, 1, 2),
                        np.float32, order="C", copy=True)


@dataclass(frozen=True)
class PlanarLayout(Layout):
    """The network input stored planar, as the user's (N, D, H, W) array already is: (N, D,
    alloc_h, alloc_w), each channel plane surrounded by the zero halo (its right side wide
    enough that a reader's whole vectors of output pixels stay in the row), no padding channels
    (``stride_c`` is the depth). Only for an input whose one reader declares it reads it so
    (ops' ``planar_input_halo``: a first conv of 1-4 channels, kernels/conv_planar.cl), so
    packing a batch is a copy into the halo, not a transpose to NHWC. Kernels see the usual
    ``X_*`` macros and ``X_PLANAR`` 1."""

    planar: ClassVar[bool] = True

    def defines(self, prefix: str) -> dict:
        return {**super().defines(prefix), f"{prefix}_PLANAR": 1}

    def host_shape(self, batch: int) -> tuple[int, int, int, int]:
        """A batch of this layout as a host array: (N, D, alloc_h, alloc_w)."""
        return (batch, self.stride_c, self.alloc_h, self.alloc_w)

    def pack(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(N, D, H, W) array -> (N, D, alloc_h, alloc_w) float32, a copy into the halo; ``out``
        as in Layout.pack (at least N images, its halo still zero: its first N are returned)."""
        n = x.shape[0]
        out = self.host_array(n, out)
        top, _, left, _ = self.halo
        h, w = self.volume.height, self.volume.width
        out[:, :, top:top + h, left:left + w] = x
        return out

    def unpack(self, data: np.ndarray, batch: int) -> np.ndarray:
        """(N, D, alloc_h, alloc_w) -> (N, D, H, W) float32, a new array (as Layout.unpack)."""
        data = data[: batch * self.image_elements].reshape(self.host_shape(batch))
        top, _, left, _ = self.halo
        h, w = self.volume.height, self.volume.width
        return np.array(data[:, :, top:top + h, left:left + w], np.float32, copy=True)


def planar_input(graph, layouts: dict, storage_of: dict, storage: str, skipped,
                 profile) -> None:
    """Lay the network input's tensor ``storage`` out planar where its sole reader's op
    declares a planar halo on this ``profile`` (``planar_input_halo``); the NHWC layout stays
    otherwise (several readers, or an op that reads NHWC). ``storage_of``: node -> the tensor
    it reads/writes; ``skipped``: whether a node does no work in this plan (it shares its
    input's tensor)."""
    readers = [name for name in graph if not skipped(name)
               and any(storage_of[i] == storage for i in graph.nodes[name].inputs)]
    if len(readers) != 1:
        return
    node = graph.nodes[readers[0]]
    halo = REGISTRY[node.op].planar_input_halo(node, profile)
    if halo is not None:
        volume = layouts[storage].volume
        layouts[storage] = PlanarLayout(volume, volume.depth, halo)
