"""What a plan is made of: specialised kernels, their launches, and the arguments of a launch.

A launch argument is a device buffer, named by what it holds (``Buffer``), a scalar the runtime
sets at each pass (``Scalar``), or integers fixed by the plan (``Ints``: the shapes of the
pixel-wise kernels, which take them at run time so one compiled kernel serves every layer).
``Buffer.name`` is the one naming function: the executor, the training session and the tuner
find buffers by it, and nothing else composes names. Every kind of plan (inference, training, a
tuner's probe) implements ``ExecutablePlan``, the interface the executor runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# What a buffer can hold. Per batch: activations (act) and their gradients (grad), the batch's
# labels and per-image losses and correct flags, partial sums over splits of the batch (scratch).
# Fixed: parameters (param) and their gradients (pgrad), optimizer state (state, by slot),
# batchnorm's saved batch statistics (saved), re-laid weights (work).
BUFFER_KINDS = ("act", "grad", "labels", "losses", "correct", "scratch",
                "param", "pgrad", "state", "saved", "work")
# sample_offset: the global index of a shard's first image (data-parallel training: dropout
# masks follow the image's place in the global batch, not in the shard)
SCALAR_NAMES = ("batch", "lr", "seed", "sample_offset", "correction1", "correction2")


@dataclass(frozen=True)
class Buffer:
    """A device buffer: ``kind`` (BUFFER_KINDS), the node (or storage) it belongs to, the
    parameter key, the optimizer slot."""

    kind: str
    node: str = ""
    key: str = ""
    slot: int | None = None

    def __post_init__(self):
        if self.kind not in BUFFER_KINDS:
            raise ValueError(f"unknown buffer kind {self.kind!r}")

    @property
    def name(self) -> str:
        """``kind[:node[:key[:slot]]]``: 'param:conv1:weight', 'state:fc:bias:1', 'labels'."""
        parts = [self.kind, self.node, self.key, "" if self.slot is None else str(self.slot)]
        while parts[-1] == "":
            parts.pop()
        return ":".join(parts)


@dataclass(frozen=True)
class Scalar:
    """A run-time scalar argument (SCALAR_NAMES): the batch's image count, the learning rate..."""

    name: str

    def __post_init__(self):
        if self.name not in SCALAR_NAMES:
            raise ValueError(f"unknown scalar {self.name!r}")


@dataclass(frozen=True)
class Ints:
    """Integers the plan fixes, set once when the kernel is bound: an ``int`` argument for one
    value, ``int2``/``int4`` for two or four. They carry shapes that would otherwise be
    compile-time defines: PoCL compiles each distinct kernel for 0.1-0.8 s, and a pixel-wise
    kernel specialised by its shape is one more kernel per distinct layer shape."""

    values: tuple[int, ...]

    def __post_init__(self):
        if len(self.values) not in (1, 2, 4):
            raise ValueError(f"an int, int2 or int4 argument, not {len(self.values)} values")
        object.__setattr__(self, "values", tuple(int(value) for value in self.values))

    @property
    def name(self) -> str:
        """'ints:16,8,8,0', as plan listings show it."""
        return "ints:" + ",".join(map(str, self.values))

    @classmethod
    def layout(cls, layout) -> Ints:
        """A tensor's layout as common.cl's AT_RUN reads it: element (0, 0, 0, 0)'s index past
        the halo, then the elements per image, per row, per pixel."""
        top, _, left, _ = layout.halo
        pixel = layout.stride_c
        row = layout.alloc_w * pixel
        return cls((top * row + left * pixel, layout.alloc_h * row, row, pixel))

    @classmethod
    def grid(cls, layout, vector: int) -> Ints:
        """A pixel-wise kernel's grid over ``layout``: (channel vectors, width, height, 0)."""
        return cls((layout.stride_c // vector, layout.volume.width, layout.volume.height, 0))

    def value(self):
        """What ``Kernel.set_arg`` takes: an int32, or the vector's bytes."""
        if len(self.values) == 1:
            return np.int32(self.values[0])
        return np.array(self.values, np.int32)


Arg = Buffer | Scalar | Ints


def tensor(storage: str) -> Buffer:
    return Buffer("act", storage)


def grad(storage: str) -> Buffer:
    return Buffer("grad", storage)


def param(node: str, key: str) -> Buffer:
    return Buffer("param", node, key)


def param_grad(node: str, key: str) -> Buffer:
    return Buffer("pgrad", node, key)


def state(node: str, key: str, slot: int) -> Buffer:
    return Buffer("state", node, key, slot)


def saved(node: str) -> Buffer:
    return Buffer("saved", node)


def scratch(node: str, key: str) -> Buffer:
    return Buffer("scratch", node, key)


def work(node: str, key: str) -> Buffer:
    return Buffer("work", node, key)


LABELS, LOSSES, CORRECT = Buffer("labels"), Buffer("losses"), Buffer("correct")
BATCH, LR, SEED = Scalar("batch"), Scalar("lr"), Scalar("seed")
SAMPLE_OFFSET = Scalar("sample_offset")
CORRECTION1, CORRECTION2 = Scalar("correction1"), Scalar("correction2")


@dataclass
class KernelSpec:
    """One specialised kernel in the program: a family file, a selector and its defines."""

    name: str
    family: str  # kernels/<family>.cl
    selector: str  # the #define choosing one kernel of the file
    defines: dict
    layers: list[str] = field(default_factory=list)

    def identity(self) -> tuple:
        return (self.family, self.selector, tuple(sorted(self.defines.items())))


@dataclass
class Launch:
    """One kernel launch. ``global_size[batch_axis]`` is per image: it is multiplied by the
    number of images at launch time, so one plan serves every batch up to the planned one."""

    kernel: str
    node: str
    global_size: tuple[int, ...]
    batch_axis: int | None
    local_size: tuple[int, ...] | None
    args: list[Arg]
    flops: int = 0  # per image, for --profile
    bytes: int = 0  # per image moved to and from memory, for --profile
    batch_divisor: int = 1  # global_size[batch_axis] counts groups of this many images
    site: str | None = None  # the tuning site whose knobs specialised this launch
    # a kernel whose barriers and local tiles are sized for exactly local_size (the tiled GPU
    # family, ops/conv_gemm.py): the executor runs it with that work-group or refuses, never
    # with a smaller one, which would compute a wrong result silently
    exact_local: bool = False
    # reads only parameters (Winograd's filter transform in inference): the executor runs it
    # on the first pass after parameters are uploaded or buffers allocated, not every pass
    per_params: bool = False

    def sizes(self, batch: int) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        size = list(self.global_size)
        if self.batch_axis is not None:
            size[self.batch_axis] *= -(-batch // self.batch_divisor)
        if self.local_size is None:
            return tuple(size), None
        return tuple(-(-g // w) * w for g, w in zip(size, self.local_size)), self.local_size


class ExecutablePlan(Protocol):
    """What the executor runs: inference, training and the tuner's probe plans all offer it."""

    kernels: dict[str, KernelSpec]

    def launch_groups(self) -> dict[str, list[Launch]]:
        """Launches by group ('forward'; 'train', 'step', 'evaluate'; 'probe'), in order."""

    def buffer_sizes(self, batch: int) -> dict[str, int]:
        """Bytes of every buffer that depends on the batch, by buffer name."""

    def fixed_sizes(self) -> dict[str, int]:
        """Bytes of every buffer that does not (parameters, gradients, state), by name."""

    def buffer_name(self, arg: Arg) -> str | None:
        """The device buffer a launch argument names (None for scalars)."""
