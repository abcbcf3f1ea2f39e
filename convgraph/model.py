"""The compiled model: spec -> graph -> shapes -> plan -> kernels -> run, behind one object.

>>> import numpy as np, convgraph                                       # doctest: +SKIP
>>> model = convgraph.compile("specs/seed.yaml", device="cpu")         # doctest: +SKIP
>>> model.forward(np.zeros((2, 3, 32, 32), np.float32)).shape         # doctest: +SKIP
(2, 10)
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from convgraph.codegen.plan import Plan, plan_forward
from convgraph.codegen.profile import DeviceProfile, profile_for
from convgraph.codegen.source import program_source
from convgraph.core import DeviceInfo
from convgraph.errors import DataError
from convgraph.graph import ordered
from convgraph.params import (
    check_params,
    device_bytes,
    device_param_bytes,
    initial_params,
    to_device_layouts,
)
from convgraph.pipeline import analyse
from convgraph.runtime.devices import select_device
from convgraph.runtime.executor import Executor, check_memory
from convgraph.runtime.program import BuildResult, build_program


class Model:
    """A network compiled for one OpenCL device; ``forward`` runs batches of up to ``batch``."""

    def __init__(self, graph, info: DeviceInfo, device, profile: DeviceProfile, plan: Plan,
                 source: str, build: BuildResult, context, queue, batch: int):
        self.graph, self.info, self.device, self.profile = graph, info, device, profile
        self.plan, self.source, self.build = plan, source, build
        self.context, self.queue = context, queue
        self.batch = batch
        self.executor = Executor(context, queue, device, info, plan, build.program)
        train = graph.graph["train"]
        self.normalization: tuple[np.ndarray, np.ndarray] | None = None  # (mean, std) per channel
        self._params: dict[str, np.ndarray] = {}
        self.set_params(initial_params(graph, train["init"], train["seed"]))

    # ------------------------------------------------------------------ parameters

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, PyTorch-named and shaped (``conv1.weight``, ...)."""
        return {key: value.copy() for key, value in self._params.items()}

    def set_params(self, params: dict) -> None:
        check_params(self.graph, params)
        self._params = {key: np.asarray(value, np.float32).copy()
                        for key, value in params.items()}
        device = to_device_layouts(self.graph, self._params, self.plan.layout_of)
        self.executor.check_memory(self.batch, device_bytes(device))  # before uploading
        self.executor.upload_params(device)

    @property
    def param_bytes(self) -> int:
        return self.executor.param_bytes

    def device_memory(self, batch: int | None = None) -> int:
        """Bytes on the device: parameters plus the (liveness-shared) activation buffers."""
        return self.param_bytes + self.plan.activation_bytes(batch or self.batch)

    # ------------------------------------------------------------------ running

    def forward(self, x) -> np.ndarray:
        """Run inference on ``x`` (batch, depth, height, width); returns (batch, classes) for a
        network ending in 1x1xD, else (batch, depth, height, width).

        After ``fit`` (or with ``normalization`` set) inputs are prepared as in training: uint8
        pixels scaled to [0, 1], then standardised per channel."""
        x = self._check_input(x)
        outputs = [self._forward_batch(x[start:start + self.batch])
                   for start in range(0, x.shape[0], self.batch)]
        out = np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)
        volume = self.graph.nodes[self.graph.graph["output"]]["output"]
        return out.reshape(out.shape[0], -1) if volume.width == volume.height == 1 else out

    def _forward_batch(self, x: np.ndarray) -> np.ndarray:
        self.executor.allocate(self.batch)
        # the last batch's copy has finished (every step ends with a blocking read)
        self._staging = self.plan.layouts[self.plan.input].pack(x, getattr(self, "_staging", None))
        self.executor.write_input(self._staging)
        self.executor.enqueue(x.shape[0])
        return self.executor.read_tensor(self.plan.output, x.shape[0])

    def _check_input(self, x) -> np.ndarray:
        volume = self.graph.nodes[ordered(self.graph)[0]]["output"]
        x = np.asarray(x)
        expected = (volume.depth, volume.height, volume.width)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise DataError(f"the input batch has shape {x.shape}, but '{self.graph.graph['name']}'"
                            f" takes (batch, {volume.depth}, {volume.height}, {volume.width}) "
                            f"(depth, height, width of {volume}).")
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"the input batch holds {x.dtype} values, not numbers.")
        if self.normalization is not None:
            from convgraph.data import as_unit

            mean, std = self.normalization
            x = (as_unit(x) - np.asarray(mean, np.float32)[None, :, None, None]) / np.asarray(
                std, np.float32)[None, :, None, None]
        return np.ascontiguousarray(x, np.float32)

    # ------------------------------------------------------------------ training

    def fit(self, data, epochs: int | None = None, test_data=None, checkpoint_dir=None,
            resume: bool = False, metrics_file=None, report=None):
        """Train on the device with the spec's ``train:`` settings; returns one record per epoch.

        ``data`` (and ``test_data``) is a convgraph.data.Dataset or an ``(x, y)`` pair with x as
        (N, depth, height, width) uint8 or float32 and y as (N,) class indices. The trained
        weights replace this model's.

        >>> records = model.fit((x, y), epochs=2, test_data=(x_test, y_test))  # doctest: +SKIP
        """
        from convgraph.train.loop import Trainer
        from convgraph.train.session import TrainingSession

        session = TrainingSession(self.graph, device=self.info.index, batch=self.batch)
        session.set_params(self._params)
        trainer = Trainer(session, _as_dataset(data, self.graph),
                          None if test_data is None else _as_dataset(test_data, self.graph),
                          checkpoint_dir, metrics_file)
        if resume:
            trainer.resume()
        records = trainer.fit(epochs, report=report)
        self.set_params(session.params)
        self.normalization = None if trainer.mean is None else (trainer.mean, trainer.std)
        return records

    # ------------------------------------------------------------------ description

    def kernel_records(self) -> list[dict]:
        """The launches of one forward pass at the planned batch (for --json and the plan file)."""
        records = []
        for launch in self.plan.launches:
            local = self.executor.local_sizes.get(id(launch), self.executor.legal_local(launch))
            global_size, _ = launch.sizes(self.batch)
            records.append({"name": launch.kernel, "node": launch.node,
                            "global_size": list(global_size),
                            "local_size": list(local) if local else None})
        return records


def _as_dataset(data, graph):
    from convgraph.data import Dataset

    if isinstance(data, Dataset):
        return data
    x, y = data
    classes = graph.nodes[graph.graph["output"]]["output"].depth
    x = np.asarray(x)
    if x.dtype not in (np.uint8, np.float32):
        x = x.astype(np.float32)
    return Dataset("arrays", x, np.asarray(y, np.int64), classes)


def compile(spec, device: str | None = None, batch: int = 64, overrides=(),  # noqa: A001
            share_buffers: bool = True) -> Model:
    """Compile a spec (path, dict or analysed graph) for a device (``P:D``, a name fragment, or
    the default), planned for batches of up to ``batch`` images.

    Parameters are initialised from the spec's ``train: init/seed``; replace them with
    ``model.set_params``.
    """
    import pyopencl as cl

    if batch < 1:
        raise DataError(f"batch must be at least 1, got {batch}.")
    graph = spec if isinstance(spec, nx.DiGraph) else analyse(spec, overrides)
    info, cl_device = select_device(device)
    profile = profile_for(info)
    plan = plan_forward(graph, profile, share_buffers)
    # what the device cannot hold is refused now, before building or allocating anything
    check_memory(info, plan, batch, device_param_bytes(graph, plan.layout_of))
    source = program_source(plan, graph.graph["name"])
    context = cl.Context([cl_device])
    queue = cl.CommandQueue(context, cl_device,
                            properties=cl.command_queue_properties.PROFILING_ENABLE)
    build = build_program(context, cl_device, info, source, list(profile.build_options))
    return Model(graph, info, cl_device, profile, plan, source, build, context, queue, batch)
