"""Running a plan on a device: buffers allocated once per batch size, kernels enqueued back to back.

The host touches the device only at batch boundaries: one copy in (the packed input batch), the
launches with no synchronisation between layers, one copy out.
"""

from __future__ import annotations

import math

import numpy as np

from convgraph.codegen.plan import Launch, Plan
from convgraph.errors import DeviceError
from convgraph.runtime.devices import DeviceInfo

INVALID_LOCAL = ("OUT_OF_RESOURCES", "INVALID_WORK_GROUP_SIZE", "INVALID_WORK_ITEM_SIZE")


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


class Executor:
    def __init__(self, context, queue, device, info: DeviceInfo, plan: Plan, program):
        import pyopencl as cl

        self.cl = cl
        self.context, self.queue, self.device, self.info = context, queue, device, info
        self.plan, self.program = plan, program
        self.batch = 0
        self.buffers: dict[str, object] = {}  # per-batch buffers
        self.fixed: dict[str, object] = {}  # parameters, optimizer state: any batch
        self.kernels: dict[str, list] = {}
        self.local_sizes: dict[int, tuple | None] = {}

    # ------------------------------------------------------------------ memory

    def check_memory(self, batch: int, param_bytes: int) -> int:
        """Refuse, before allocating, what the device cannot hold; returns the bytes needed."""
        per_buffer = list(self.plan.buffer_sizes(batch).values())
        total = sum(per_buffer) + param_bytes
        biggest = max(per_buffer, default=0)
        if biggest > self.info.max_alloc:
            raise DeviceError(
                f"batch {batch} needs one buffer of {_mib(biggest)}, more than the largest "
                f"allocation {self.info.label} allows ({_mib(self.info.max_alloc)}).",
                hint=f"use a batch of at most {max(1, batch * self.info.max_alloc // biggest)}.")
        if total > self.info.global_memory:
            raise DeviceError(
                f"batch {batch} needs {_mib(total)} of device memory ({_mib(param_bytes)} of "
                f"parameters), more than {self.info.label} has ({_mib(self.info.global_memory)}).",
                hint="use a smaller batch, or a device with more memory (--device).")
        return total

    def allocate(self, batch: int) -> None:
        """Per-batch buffers for ``batch`` images, zero-filled (halos must read as zeros)."""
        if batch == self.batch:
            return
        cl = self.cl
        self.buffers = {}
        try:
            for name, size in self.plan.buffer_sizes(batch).items():
                size = max(4, size)
                # zeros copied in, not clEnqueueFillBuffer: Oclgrind then reports every later
                # kernel's writes to the buffer as uninitialised
                flags = cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR
                buffer = cl.Buffer(self.context, flags, hostbuf=np.zeros(size // 4, np.float32))
                self.buffers[name] = buffer
            self.queue.finish()
        except cl.Error as exc:
            raise DeviceError(
                f"{self.info.label} could not allocate the buffers for batch {batch}: {exc}.",
                hint="use a smaller batch, or another device (--device).") from None
        self.batch = batch
        self._bind()

    def upload(self, arrays: dict[str, np.ndarray]) -> None:
        """Create or overwrite fixed-size buffers (parameters, optimizer state) by name."""
        cl = self.cl
        for name, array in arrays.items():
            data = np.ascontiguousarray(array)
            if data.size == 0:
                data = np.zeros(1, data.dtype)
            if name in self.fixed and self.fixed[name].size == data.nbytes:
                cl.enqueue_copy(self.queue, self.fixed[name], data, is_blocking=False)
            else:
                self.fixed[name] = cl.Buffer(self.context, cl.mem_flags.READ_WRITE
                                             | cl.mem_flags.COPY_HOST_PTR, hostbuf=data)
        self.queue.finish()
        if self.batch:
            self._bind()

    def upload_params(self, device_params: dict[tuple[str, str], np.ndarray]) -> None:
        self.upload({f"param:{node}:{key}": np.asarray(value, np.float32)
                     for (node, key), value in device_params.items()})

    def download(self, name: str, dtype=np.float32) -> np.ndarray:
        buffer = self.fixed.get(name) or self.buffers[name]
        host = np.empty(buffer.size // np.dtype(dtype).itemsize, dtype)
        self.cl.enqueue_copy(self.queue, host, buffer, is_blocking=True)
        return host

    @property
    def param_bytes(self) -> int:
        return sum(b.size for name, b in self.fixed.items() if name.startswith("param:"))

    def buffer(self, name: str):
        return self.buffers[name] if name in self.buffers else self.fixed[name]

    def tensor_buffer(self, storage: str):
        return self.buffer(self.plan.buffer_name(("tensor", storage)))

    # ------------------------------------------------------------------ launches

    def _bind(self) -> None:
        """One kernel object per launch with its buffers bound, so a pass only enqueues."""
        self.kernels = {}
        for group, launches in self.plan.launch_groups().items():
            bound = []
            for launch in launches:
                kernel = self.cl.Kernel(self.program, launch.kernel)
                for index, arg in enumerate(launch.args):
                    name = self.plan.buffer_name(arg)
                    if name is not None:
                        kernel.set_arg(index, self.buffer(name))
                bound.append(kernel)
            self.kernels[group] = bound

    def legal_local(self, launch: Launch):
        """The plan's work-group shape clipped to this device's limits (None: the driver's)."""
        if launch.local_size is None:
            return None
        limit = self.info.max_work_group_size
        sizes = list(launch.local_size)
        for axis, most in enumerate(self.info.max_work_item_sizes[: len(sizes)]):
            sizes[axis] = max(1, min(sizes[axis], most))
        while math.prod(sizes) > limit:
            axis = max(range(len(sizes)), key=lambda a: sizes[a])
            sizes[axis] = max(1, sizes[axis] // 2)
        return tuple(sizes)

    def enqueue(self, batch: int, events: list | None = None, group: str = "forward",
                scalars: dict | None = None) -> None:
        """Enqueue the launches of ``group`` for ``batch`` images (at most the allocated batch).

        ``scalars`` gives the run-time arguments other than the batch (seed, lr, ...)."""
        cl = self.cl
        values = {"batch": np.int32(batch), **(scalars or {})}
        launches = self.plan.launch_groups()[group]
        for launch, kernel in zip(launches, self.kernels[group]):
            for slot, arg in enumerate(launch.args):
                if self.plan.buffer_name(arg) is None:
                    kernel.set_arg(slot, values[arg[0]])
            global_size, _ = launch.sizes(batch)
            key = id(launch)
            local = self.local_sizes.setdefault(key, self.legal_local(launch))
            while True:
                padded = global_size if local is None else tuple(
                    -(-g // size) * size for g, size in zip(global_size, local))
                try:
                    event = cl.enqueue_nd_range_kernel(self.queue, kernel, padded, local)
                    break
                except cl.Error as exc:  # too big a work-group here: halve it and retry
                    if local is None or not any(code in str(exc) for code in INVALID_LOCAL):
                        raise DeviceError(
                            f"launching kernel {launch.kernel} (layer '{launch.node}') on "
                            f"{self.info.label} failed: {exc}.",
                            hint="try a smaller batch or another device (--device).") from None
                    local = None if math.prod(local) <= 1 else tuple(
                        max(1, size // 2) for size in local)
                    self.local_sizes[key] = local
            if events is not None:
                events.append(event)

    def write_input(self, packed: np.ndarray) -> None:
        self.cl.enqueue_copy(self.queue, self.tensor_buffer(self.plan.input), packed,
                             is_blocking=False)

    def read_tensor(self, storage: str, batch: int, kind: str = "tensor") -> np.ndarray:
        layout = self.plan.layouts[storage]
        host = np.empty(batch * layout.image_elements, np.float32)
        buffer = self.buffer(self.plan.buffer_name((kind, storage)))
        self.cl.enqueue_copy(self.queue, host, buffer, is_blocking=True)
        return layout.unpack(host, batch)
