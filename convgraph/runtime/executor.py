"""Running a plan on a device: buffers allocated once per batch size, kernels enqueued back to back.

The host touches the device only at batch boundaries: the input batch packed in (straight into
the mapped input buffer on a device that works in the host's memory, else one copy), the launches
with no synchronisation between layers, one copy out (the pass's one wait for the device).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from convgraph.codegen.launches import (
    ExecutablePlan,
    Ints,
    Launch,
    Scalar,
    grad,
    param,
    tensor,
)
from convgraph.core import DeviceInfo
from convgraph.errors import DeviceError
from convgraph.memory import bytes_text, size_text

INVALID_LOCAL = ("OUT_OF_RESOURCES", "INVALID_WORK_GROUP_SIZE", "INVALID_WORK_ITEM_SIZE")

ALLOCATION_HINT = "use a smaller batch (--batch), or another device with more memory (--device)."
EXACT_LOCAL_HINT = ("compile the model on this device (its profile then offers only work-groups "
                    "the device holds, or the direct kernels), or drop the tuning entry that "
                    "chose this setting ('convgraph tune' rewrites it).")


def memory_needed(plan, batch: int, param_bytes: int) -> tuple[int, int]:
    """(total, largest single buffer) in bytes the device must hold for ``batch`` images."""
    per_buffer = list(plan.buffer_sizes(batch).values())
    return sum(per_buffer) + param_bytes, max(per_buffer, default=0)


def host_needed(plan, batch: int, param_bytes: int) -> int:
    """Bytes the host holds on top of the parameters while a plan runs: the re-laid copies (and
    optimizer zeros) made for the upload, and a batch of inputs as float32, scaled and packed."""
    layout = plan.layouts[plan.input]
    return param_bytes + 2 * 4 * batch * layout.image_elements


def largest_batch(plan, param_bytes: int, info: DeviceInfo, batch: int) -> int:
    """The largest batch below ``batch`` that the device and the host hold (0: not even one
    image)."""
    from convgraph.memory import host_fits

    def fits(count: int) -> bool:
        total, biggest = memory_needed(plan, count, param_bytes)
        return (total <= info.global_memory and biggest <= info.max_alloc
                and host_fits(host_needed(plan, count, param_bytes)))

    low, high = 0, batch  # fits(low) (or low == 0), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def check_memory(info: DeviceInfo, plan, batch: int, param_bytes: int) -> int:
    """Refuse, before anything is built or allocated, what the device cannot hold: the plan's
    per-batch buffers plus ``param_bytes`` of fixed ones; then what the host cannot hold while
    it runs (``host_needed``). Both are DeviceErrors (exit status 4) with the numbers and the
    largest batch that fits. Returns the device bytes needed.

    >>> check_memory(info, vgg16_plan, 100_000, vgg16_param_bytes)  # doctest: +SKIP
    DeviceError: batch 100000 needs an estimated 5,109,699,161,280 bytes (4,758.78 GiB) of
    device memory (527.9 MiB of parameters and state, 4,758.26 GiB of activations), more than
    0:0 pthread-... has (13,382,144,000 bytes (12.46 GiB)), and one of its buffers alone takes
    1,217.75 GiB, more than the largest single allocation allowed (4.00 GiB); refused before
    allocating anything. Fix: use a batch of at most 251 (--batch), or another device ...
    """
    from convgraph.memory import check_host, host_fits

    total, biggest = memory_needed(plan, batch, param_bytes)
    host = host_needed(plan, batch, param_bytes)
    device_fits = total <= info.global_memory and biggest <= info.max_alloc
    if device_fits and host_fits(host):
        return total
    fitting = largest_batch(plan, param_bytes, info, batch)
    hint = (f"use a batch of at most {fitting} (--batch), or another device with more memory "
            "(--device)." if fitting else _smaller_input_hint(plan, info, batch))
    if device_fits:
        check_host(host, f"batch {batch}", [("parameters and state, re-laid for the device",
                                             param_bytes),
                                            ("the input batch as float32", host - param_bytes)],
                   hint=hint.replace("another device", "a machine"))
        return total
    reasons = []
    if total > info.global_memory:
        reasons.append(f"more than {info.label} has ({bytes_text(info.global_memory)})")
    if biggest > info.max_alloc:
        reasons.append(f"{'and ' if reasons else f'on {info.label}, '}one of its buffers alone "
                       f"takes {size_text(biggest)}, more than the largest single allocation "
                       f"allowed ({size_text(info.max_alloc)})")
    raise DeviceError(
        f"batch {batch} needs an estimated {bytes_text(total)} of device memory ("
        f"{size_text(param_bytes)} of parameters and state, {size_text(total - param_bytes)} of "
        "activations), " + ", ".join(reasons) + "; refused before allocating anything.",
        hint=hint)


def _scaled(graph, factor: int):
    """``graph``'s network re-analysed with its input's width and height divided by ``factor``
    (None when that input is too small or its shapes do not work out)."""
    from dataclasses import replace

    from convgraph.core import Volume
    from convgraph.errors import SpecError
    from convgraph.graph import build_graph
    from convgraph.passes import insert_flatten, mark_fusions
    from convgraph.shapes import infer_shapes

    spec = graph.graph.get("spec")
    if spec is None:
        return None
    layers = []
    for layer in spec.layers:
        if layer.op == "input":
            shape = layer.attrs["shape"]
            if shape.width // factor < 1 or shape.height // factor < 1:
                return None
            layer = replace(layer, attrs={**layer.attrs, "shape": Volume(
                shape.width // factor, shape.height // factor, shape.depth)})
        layers.append(layer)
    try:
        scaled = build_graph(replace(spec, layers=layers))
        infer_shapes(scaled)
        insert_flatten(scaled)
        mark_fusions(scaled)
    except SpecError:
        return None
    scaled.graph["spec"] = replace(spec, layers=layers)
    return scaled


def largest_input(plan, info: DeviceInfo, batch: int):
    """The largest input (the plan's own divided by a power of two, the aspect kept) whose
    inference plan the device and the host hold at ``batch``, as a Volume; None when no smaller
    one does, or the plan keeps no graph (training plans)."""
    from convgraph.codegen.plan import plan_forward
    from convgraph.codegen.profile import base_profile
    from convgraph.memory import host_fits
    from convgraph.params import check_host_params, device_param_bytes

    graph = getattr(plan, "graph", None)
    if graph is None or graph.graph.get("spec") is None:
        return None
    first = graph.nodes[plan.input]["output"] if plan.input in graph.nodes else None
    factor = 2
    while first is not None and factor <= max(first.width, first.height):
        scaled = _scaled(graph, factor)
        factor *= 2
        if scaled is None:
            continue
        try:
            check_host_params(scaled)
        except DeviceError:
            continue
        smaller = plan_forward(scaled, base_profile(info))
        params = device_param_bytes(scaled, smaller.layout_of)
        total, biggest = memory_needed(smaller, batch, params)
        if (total <= info.global_memory and biggest <= info.max_alloc
                and host_fits(host_needed(smaller, batch, params))):
            return smaller.layouts[smaller.input].volume
    return None


def _smaller_input_hint(plan, info: DeviceInfo, batch: int) -> str:
    volume = largest_input(plan, info, batch)
    if volume is not None:
        return (f"even one image does not fit; at batch {batch} an input of {volume} fits "
                "(width and height halved until it does), or use another device with more "
                "memory (--device).")
    return ("even one image does not fit, nor does any smaller input: make the network's "
            "largest layers smaller (filters, units, padding), or use another device with more "
            "memory (--device).")


@contextlib.contextmanager
def device_errors(info: DeviceInfo, what: str, hint: str = ALLOCATION_HINT):
    """Turn an OpenCL error (pyopencl's MemoryError, LogicError, RuntimeError) or the host
    running out of memory while ``what`` into a DeviceError that names the device and says what
    to try."""
    import pyopencl as cl

    try:
        yield
    except cl.Error as exc:
        raise DeviceError(f"{what} on {info.label} failed: {exc}.", hint=hint) from None
    except MemoryError:
        raise DeviceError(f"{what} on {info.label} failed: the host ran out of memory.",
                          hint=hint) from None


def legal_local(info: DeviceInfo, launch: Launch) -> tuple[int, ...] | None:
    """``launch``'s work-group shape clipped to the device's limits (None: the driver's); an
    ``exact_local`` launch keeps its own (the executor refuses it where it does not fit)."""
    if launch.local_size is None:
        return None
    if launch.exact_local:
        return tuple(launch.local_size)
    sizes = list(launch.local_size)
    for axis, most in enumerate(info.max_work_item_sizes[: len(sizes)]):
        sizes[axis] = max(1, min(sizes[axis], most))
    while math.prod(sizes) > info.max_work_group_size:
        axis = max(range(len(sizes)), key=lambda a: sizes[a])
        sizes[axis] = max(1, sizes[axis] // 2)
    return tuple(sizes)


def padded_global(global_size, local) -> tuple[int, ...]:
    """The global size rounded up to whole work-groups (kernels check their bounds)."""
    if local is None:
        return tuple(global_size)
    return tuple(-(-g // size) * size for g, size in zip(global_size, local))


class Executor:
    def __init__(self, context, queue, device, info: DeviceInfo, plan: ExecutablePlan, program):
        import pyopencl as cl

        self.cl = cl
        self.context, self.queue, self.device, self.info = context, queue, device, info
        self.plan, self.program = plan, program
        self.batch = 0
        self.buffers: dict[str, object] = {}  # per-batch buffers
        self.fixed: dict[str, object] = {}  # parameters, optimizer state: any batch
        self.kernels: dict[str, list] = {}
        self.local_sizes: dict[int, tuple | None] = {}
        self._read_array = np.empty(0, np.float32)  # what read_tensor reads into
        # the input buffer mapped for the host to pack into, and the map's event (see
        # input_array); only where the device works in the host's memory (PoCL's CPU device)
        self._input_map: tuple | None = None
        self._staging: np.ndarray | None = None  # write_images' host array, where not mapped
        input_storage = getattr(plan, "input", None)  # the tuner's probe plans have none
        self._input_name = (None if input_storage is None
                            else plan.buffer_name(tensor(input_storage)))
        self.maps_input = (self._input_name is not None
                           and bool(getattr(device, "host_unified_memory", False)))
        # whether launches that read only parameters (Launch.per_params) must run on the next
        # pass: after any upload, and after allocating (their work buffers are per batch)
        self.params_changed = True

    # ------------------------------------------------------------------ memory

    def check_memory(self, batch: int, param_bytes: int) -> int:
        """Refuse, before allocating, what the device cannot hold; returns the bytes needed."""
        return check_memory(self.info, self.plan, batch, param_bytes)

    def allocate(self, batch: int) -> None:
        """Per-batch buffers for ``batch`` images, zero-filled (halos must read as zeros)."""
        if batch == self.batch:
            return
        cl = self.cl
        self.release_input()
        self.buffers, self.batch = {}, 0
        sizes = {name: max(4, size) for name, size in self.plan.buffer_sizes(batch).items()}
        total = sum(sizes.values())
        try:
            with device_errors(self.info, f"allocating {bytes_text(total)} of buffers for batch "
                                          f"{batch}"):
                # zeros copied in, not clEnqueueFillBuffer: Oclgrind then reports every later
                # kernel's writes to the buffer as uninitialised. One host array serves all.
                zeros = np.zeros(max(sizes.values(), default=4) // 4, np.float32)
                flags = cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR
                for name, size in sizes.items():
                    self.buffers[name] = cl.Buffer(self.context, flags, size=size, hostbuf=zeros)
                self.queue.finish()
        except DeviceError:
            self.buffers = {}  # give back what was allocated before the failure
            raise
        self.batch = batch
        self.params_changed = True
        self._bind()

    def upload(self, arrays: dict[str, np.ndarray]) -> None:
        """Create or overwrite fixed-size buffers (parameters, optimizer state) by name."""
        cl = self.cl
        total = sum(max(4, np.asarray(array).nbytes) for array in arrays.values())
        with device_errors(self.info, f"uploading {bytes_text(total)} of parameters and state"):
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
        self.params_changed = True
        if self.batch:
            self._bind()

    def upload_params(self, device_params: dict[tuple[str, str], np.ndarray]) -> None:
        self.upload({param(node, key).name: np.asarray(value, np.float32)
                     for (node, key), value in device_params.items()})

    def download(self, name: str, dtype=np.float32) -> np.ndarray:
        buffer = self.fixed.get(name) or self.buffers[name]
        host = np.empty(buffer.size // np.dtype(dtype).itemsize, dtype)
        return self.read(name, host)

    def write(self, name: str, host: np.ndarray) -> None:
        """Copy ``host`` into the buffer ``name`` (without waiting: keep ``host`` alive until
        the next blocking call)."""
        self._release_before(name)
        with device_errors(self.info, f"copying to buffer '{name}'"):
            self.cl.enqueue_copy(self.queue, self.buffer(name), host, is_blocking=False)

    def read(self, name: str, host: np.ndarray, blocking: bool = True) -> np.ndarray:
        """Copy the buffer ``name`` into ``host``, after every launch before it; returns host.
        Errors of earlier launches that the device reports only now surface here. With
        ``blocking`` False the copy is only queued: ``host`` holds it after the next blocking
        call (a later blocking read waits for it too, the queue being in order)."""
        self._release_before(name)
        with device_errors(self.info, f"reading buffer '{name}'"):
            self.cl.enqueue_copy(self.queue, host, self.buffer(name), is_blocking=blocking)
        return host

    @property
    def param_bytes(self) -> int:
        return sum(b.size for name, b in self.fixed.items() if name.startswith("param:"))

    def buffer(self, name: str):
        return self.buffers[name] if name in self.buffers else self.fixed[name]

    def tensor_buffer(self, storage: str):
        return self.buffer(self.plan.buffer_name(tensor(storage)))

    # ------------------------------------------------------------------ launches

    def _bind(self) -> None:
        """One kernel object per launch with its buffers bound, so a pass only enqueues."""
        self.kernels = {}
        self._prepared_launches: dict = {}
        self._scalar_set: dict = {}
        self._reads_input = {group: any(self.plan.buffer_name(arg) == self._input_name
                                        for launch in launches for arg in launch.args)
                             for group, launches in self.plan.launch_groups().items()}
        for group, launches in self.plan.launch_groups().items():
            bound = []
            for launch in launches:
                kernel = self.cl.Kernel(self.program, launch.kernel)
                for index, arg in enumerate(launch.args):
                    name = self.plan.buffer_name(arg)
                    if name is not None:
                        kernel.set_arg(index, self.buffer(name))
                    elif isinstance(arg, Ints):  # fixed by the plan: set once, here
                        kernel.set_arg(index, arg.value())
                bound.append(kernel)
            self.kernels[group] = bound

    def _prepared(self, group: str, batch: int) -> list:
        """[launch, kernel, scalar slots, global size, padded global size, work-group] of each
        launch of ``group`` at ``batch``, worked out once: the seed network's step spent a
        fifth of its time enqueueing, and ResNet-8's 20 launches still cost 180 us of Python a
        pass when the sizes were worked out at every launch (4 us of it is the driver's)."""
        key = (group, batch)
        if key not in self._prepared_launches:
            prepared = []
            for launch, kernel in zip(self.plan.launch_groups()[group], self.kernels[group]):
                global_size = launch.sizes(batch)[0]
                local = self._local_of(launch)
                prepared.append([launch, kernel,
                                 [(slot, arg.name) for slot, arg in enumerate(launch.args)
                                  if isinstance(arg, Scalar)],
                                 global_size, padded_global(global_size, local), local])
            self._prepared_launches[key] = prepared
        return self._prepared_launches[key]

    def _local_of(self, launch: Launch):
        """The work-group a launch runs with: the plan's, clipped to the device, or the
        smaller one a refused launch fell back to."""
        key = id(launch)
        local = self.local_sizes.get(key, False)
        if local is False:
            local = self.local_sizes[key] = self.legal_local(launch)
        return local

    def legal_local(self, launch: Launch):
        """The plan's work-group shape clipped to this device's limits (None: the driver's); a
        launch marked ``exact_local`` gets its own shape or a DeviceError."""
        if launch.local_size is not None and launch.exact_local:
            return self.exact_local(launch)
        return legal_local(self.info, launch)

    def exact_local(self, launch: Launch) -> tuple:
        """``launch``'s work-group, checked against the device's limits: a tiled kernel's
        barriers and local tiles are sized for exactly that shape."""
        local = tuple(launch.local_size)
        sizes = self.info.max_work_item_sizes[: len(local)]
        if (math.prod(local) > self.info.max_work_group_size
                or any(size > most for size, most in zip(local, sizes))):
            raise DeviceError(
                f"kernel {launch.kernel} (layer '{launch.node}') needs work-groups of exactly "
                f"{'x'.join(map(str, local))} work-items, and {self.info.label} holds at most "
                f"{self.info.max_work_group_size} ({'x'.join(map(str, sizes))} per axis).",
                hint=EXACT_LOCAL_HINT)
        return local

    def enqueue(self, batch: int, events: list | None = None, group: str = "forward",
                scalars: dict | None = None) -> None:
        """Enqueue the launches of ``group`` for ``batch`` images (at most the allocated batch).

        ``scalars`` gives the run-time arguments other than the batch (seed, lr, ...)."""
        prepared_launches = self._prepared(group, batch)
        remap = self._input_map is not None and self._reads_input[group]
        if remap:
            self.release_input()  # no kernel runs on a buffer the host has mapped
        enqueue_kernel, queue = self.cl.enqueue_nd_range_kernel, self.queue
        values = {"batch": np.int32(batch), "sample_offset": np.uint32(0), **(scalars or {})}
        run_per_params, self.params_changed = self.params_changed, False
        scalar_set = self._scalar_set
        for prepared in prepared_launches:
            launch, kernel, slots, _, padded, local = prepared
            if launch.per_params and not run_per_params:
                continue  # its work buffer still holds what it computed from these parameters
            for slot, name in slots:  # only changed scalars: set_arg costs a step's time
                value = values[name]
                if scalar_set.get((id(kernel), slot)) != value:
                    kernel.set_arg(slot, value)
                    scalar_set[(id(kernel), slot)] = value
            try:
                event = enqueue_kernel(queue, kernel, padded, local)
            except self.cl.Error as exc:
                event = self._launch_smaller(prepared, batch, exc)
            if events is not None:
                events.append(event)
        if remap:
            self.map_input()  # behind the launches: the next batch is packed into it

    def _launch_smaller(self, prepared: list, batch: int, exc):
        """Launch again with halved work-groups after the driver refused ``prepared``'s (too
        big a work-group here); DeviceError when it was refused for another reason, or the
        launch needs exactly its own work-group. The shape that runs is kept."""
        cl = self.cl
        launch, kernel, _, global_size, _, local = prepared
        while True:
            exact = launch.exact_local
            if local is None or exact or not any(code in str(exc) for code in INVALID_LOCAL):
                raise DeviceError(
                    f"launching kernel {launch.kernel} (layer '{launch.node}') for "
                    f"batch {batch} on {self.info.label} failed: {exc}"
                    + (f" (it runs only with work-groups of exactly {local})"
                       if exact else "") + ".",
                    hint=EXACT_LOCAL_HINT if exact else ALLOCATION_HINT) from None
            local = None if math.prod(local) <= 1 else tuple(max(1, size // 2) for size in local)
            self.local_sizes[id(launch)] = local
            prepared[4:] = [padded_global(global_size, local), local]
            try:
                return cl.enqueue_nd_range_kernel(self.queue, kernel, prepared[4], local)
            except cl.Error as error:
                exc = error

    def write_input(self, packed: np.ndarray) -> None:
        self.write(self._input_name, packed)

    def write_images(self, x: np.ndarray) -> None:
        """Pack ``x``, float32 (N, D, H, W) with N at most the allocated batch, into the input
        buffer: straight into it where the device maps it into the host's memory
        (``input_array``), else through a host array kept for the allocated batch, copied
        without waiting. That copy has finished once any blocking call after this returned
        (every pass ends with a blocking read), when the array may be packed into again."""
        layout = self.plan.layouts[self.plan.input]
        mapped = self.input_array(x.shape[0])
        if mapped is not None:
            layout.pack(x, mapped)
            return
        shape = layout.host_shape(self.batch)
        if self._staging is None or self._staging.shape != shape:
            self._staging = np.zeros(shape, np.float32)
        self.write_input(layout.pack(x, self._staging))

    # ------------------------------------------------------------------ the input, mapped

    def input_array(self, count: int) -> np.ndarray | None:
        """The input buffer's first ``count`` images (``Layout.host_shape``), as
        a host array to pack the next batch straight into; None where the device does not
        work in the host's memory (then pack into a host array and ``write_input`` it).

        On PoCL's CPU device a mapped buffer is the device memory itself, so this saves the
        input's copy (0.1 ms of 1.2 MB for 64 CIFAR images, 0.4 ms at 256: as long as a
        blocking one, though the copy is queued without waiting). The buffer stays mapped
        until a launch that reads it is enqueued (``enqueue`` unmaps it first) or it is read,
        written or reallocated; ``map_input`` maps it again behind the launches, without
        waiting, so the next pass finds it mapped. Halos and padding channels keep the zeros
        ``allocate`` wrote: no kernel writes the network's input, and the host writes only
        the images' interiors."""
        if not self.maps_input:
            return None
        if self._input_map is None:
            self.map_input(blocking=True)
        array, event = self._input_map
        event.wait()  # done already after the blocking read that ended the last pass
        return array[:count]

    def map_input(self, blocking: bool = False) -> None:
        """Map the input buffer for writing (behind every launch already queued) unless it is
        mapped; without ``blocking`` its array is ready after the next blocking call."""
        if not self.maps_input or self._input_map is not None:
            return
        cl = self.cl
        layout = self.plan.layouts[self.plan.input]
        shape = layout.host_shape(self.batch)
        with device_errors(self.info, "mapping the input buffer"):
            self._input_map = cl.enqueue_map_buffer(
                self.queue, self.buffer(self._input_name), cl.map_flags.WRITE, 0, shape,
                np.float32, is_blocking=blocking)

    def release_input(self) -> None:
        """Unmap the input buffer if it is mapped (queued: later commands see the host's
        writes). Arrays input_array returned must not be touched after this."""
        if self._input_map is None:
            return
        array, _ = self._input_map
        self._input_map = None
        with device_errors(self.info, "unmapping the input buffer"):
            array.base.release(self.queue)

    def _release_before(self, name: str) -> None:
        if self._input_map is not None and name == self._input_name:
            self.release_input()

    def read_tensor(self, storage: str, batch: int, kind: str = "tensor") -> np.ndarray:
        """The activation (``kind`` 'tensor') or its gradient ('grad') of ``storage``."""
        layout = self.plan.layouts[storage]
        host = self._read_back(batch * layout.image_elements)
        buffer = grad(storage) if kind == "grad" else tensor(storage)
        return layout.unpack(self.read(self.plan.buffer_name(buffer), host), batch)

    def _read_back(self, elements: int) -> np.ndarray:
        """``elements`` floats of one host array that every read_tensor reads into (unpack
        copies out of it at once), kept from one read to the next: a segmentation network's
        output is megabytes, whose fresh pages the copy would fault in at every pass."""
        if self._read_array.size < elements:
            self._read_array = np.empty(elements, np.float32)
        return self._read_array[:elements]
