"""The types every stage shares: an activation volume, and what is known about a device.

They sit below everything else (spec, ops, codegen, runtime, data all read them) and import
nothing of convgraph's, so no stage has to import another one sideways or upwards to name them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple


class Volume(NamedTuple):
    """An activation volume of one image, written width x height x depth as in the ConvNet notes."""

    width: int
    height: int
    depth: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}x{self.depth}"

    @property
    def elements(self) -> int:
        return self.width * self.height * self.depth


@dataclass(frozen=True)
class DeviceInfo:
    """What convgraph needs to know about a device to generate code for it."""

    index: str  # "P:D"
    platform: str
    name: str
    type: str  # "gpu", "cpu", "accelerator", "other"
    vendor: str
    driver_version: str
    opencl_version: str
    opencl_c_version: tuple[int, int]
    compute_units: int
    global_memory: int
    max_alloc: int
    local_memory: int
    max_work_group_size: int
    max_work_item_sizes: tuple[int, ...]
    fp64: bool
    fp16: bool
    image_support: bool
    # NVIDIA's compute capability ("sm_90") or AMD's GPU target ("gfx90a") where the driver says
    architecture: str = ""

    @property
    def label(self) -> str:
        return f"{self.index} {self.name} ({self.platform})"

    def as_json(self) -> dict:
        record = asdict(self)
        record["opencl_c_version"] = "{}.{}".format(*self.opencl_c_version)
        return record
