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
        self.buffers: list = []
        self.params: dict[tuple[str, str], object] = {}
        self.kernels: list = []
        self.local_sizes = [self._legal_local(launch) for launch in plan.launches]

    # ------------------------------------------------------------------ memory

    def check_memory(self, batch: int, param_bytes: int) -> int:
        """Refuse, before allocating, what the device cannot hold; returns the bytes needed."""
        per_buffer = [4 * batch * elements for elements in self.plan.buffer_elements]
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
        """Activation buffers for ``batch`` images, zero-filled (halos must read as zeros)."""
        if batch == self.batch:
            return
        cl = self.cl
        self.buffers = []
        try:
            for elements in self.plan.buffer_elements:
                size = max(4, 4 * batch * elements)
                buffer = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, size)
                cl.enqueue_fill_buffer(self.queue, buffer, np.float32(0), 0, size)
                self.buffers.append(buffer)
            self.queue.finish()
        except cl.Error as exc:
            raise DeviceError(
                f"{self.info.label} could not allocate the activations for batch {batch}: "
                f"{exc.what() if hasattr(exc, 'what') else exc}.",
                hint="use a smaller batch, or another device (--device).") from None
        self.batch = batch
        self._bind()

    def upload_params(self, device_params: dict[tuple[str, str], np.ndarray]) -> None:
        cl = self.cl
        for key, array in device_params.items():
            data = np.ascontiguousarray(array, np.float32)
            if key in self.params and self.params[key].size == max(4, data.nbytes):
                cl.enqueue_copy(self.queue, self.params[key], data, is_blocking=False)
            else:
                self.params[key] = cl.Buffer(self.context, cl.mem_flags.READ_ONLY
                                             | cl.mem_flags.COPY_HOST_PTR,
                                             hostbuf=data if data.size else np.zeros(1, np.float32))
        self.queue.finish()
        if self.batch:
            self._bind()

    def tensor_buffer(self, storage: str):
        return self.buffers[self.plan.buffer_of[storage]]

    # ------------------------------------------------------------------ launches

    def _bind(self) -> None:
        """One kernel object per launch with its buffers bound, so a forward pass only enqueues."""
        self.kernels = []
        for launch in self.plan.launches:
            kernel = self.cl.Kernel(self.program, launch.kernel)
            for index, arg in enumerate(launch.args):
                if arg[0] == "tensor":
                    kernel.set_arg(index, self.tensor_buffer(arg[1]))
                elif arg[0] == "param":
                    kernel.set_arg(index, self.params[(arg[1], arg[2])])
            self.kernels.append(kernel)

    def _legal_local(self, launch: Launch):
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

    def enqueue(self, batch: int, events: list | None = None) -> None:
        """Enqueue every launch for ``batch`` images (at most the allocated batch)."""
        cl = self.cl
        for index, (launch, kernel) in enumerate(zip(self.plan.launches, self.kernels)):
            for slot, arg in enumerate(launch.args):
                if arg[0] == "batch":
                    kernel.set_arg(slot, np.int32(batch))
            global_size, _ = launch.sizes(batch)
            local = self.local_sizes[index]
            if local is not None:
                global_size = tuple(-(-g // size) * size for g, size in zip(global_size, local))
            while True:
                try:
                    event = cl.enqueue_nd_range_kernel(self.queue, kernel, global_size, local)
                    break
                except cl.Error as exc:  # too big a work-group here: halve it and retry
                    if local is None or not any(code in str(exc) for code in INVALID_LOCAL):
                        raise DeviceError(
                            f"launching kernel {launch.kernel} (layer '{launch.node}') on "
                            f"{self.info.label} failed: {exc}.",
                            hint="try a smaller batch or another device (--device).") from None
                    local = None if math.prod(local) <= 1 else tuple(
                        max(1, size // 2) for size in local)
                    self.local_sizes[index] = local
                    if local is not None:
                        global_size = tuple(-(-g // size) * size
                                            for g, size in zip(launch.sizes(batch)[0], local))
                    else:
                        global_size = launch.sizes(batch)[0]
            if events is not None:
                events.append(event)

    def write_input(self, packed: np.ndarray) -> None:
        self.cl.enqueue_copy(self.queue, self.tensor_buffer(self.plan.input), packed,
                             is_blocking=False)

    def read_tensor(self, storage: str, batch: int) -> np.ndarray:
        layout = self.plan.layouts[storage]
        host = np.empty(batch * layout.image_elements, np.float32)
        self.cl.enqueue_copy(self.queue, host, self.tensor_buffer(storage), is_blocking=True)
        return layout.unpack(host, batch)
