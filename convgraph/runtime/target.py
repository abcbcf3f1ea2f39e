"""One target, one build: a device opened once, and the one way a plan becomes a program on it.

A ``Target`` is what every stage that runs kernels needs of a device: its description
(``DeviceInfo``), the pyopencl device, one context and one profiling queue, and the device
profile (tile sizes, build options, the device's tuning table) the code generator specialises
for. It is opened once from a device selector and then handed down: a model, its training and
evaluation, ``--verify`` and the tuner all run on the same context and queue instead of choosing
the device again. ``build(plan, target, title)`` turns any plan (inference, training, evaluation,
a tuner's probe, the peak kernels of ``--profile``) into a built program, so a compiler failure
always becomes the same located ``KernelBuildError``.

The context and queue are created on first use, not when the target is opened, so a network the
device cannot hold is refused (``check_memory``) before anything is created on the device.

Data-parallel training over several devices opens one Target per device and builds the same
plan on each; nothing here assumes there is only one.

>>> target = Target.open("cpu")                                   # doctest: +SKIP
>>> built = build(plan_forward(graph, target.profile), target, "seed")  # doctest: +SKIP
>>> executor = built.executor()                                  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from convgraph.codegen.profile import DeviceProfile, profile_for
from convgraph.codegen.source import program_source
from convgraph.core import DeviceInfo
from convgraph.runtime.devices import select_device
from convgraph.runtime.executor import Executor
from convgraph.runtime.parallel import prebuild, wants_prebuild
from convgraph.runtime.program import build_program


@dataclass(eq=False)
class Target:
    """An OpenCL device opened for convgraph: description, device, context, queue, profile.

    Attributes
    ----------
    info : DeviceInfo
        What is known about the device (limits, versions, the ``P:D`` index).
    device : pyopencl.Device
    profile : DeviceProfile
        The code-generation parameters for this device, with its tuning table attached.
    context, queue
        Created on first use and shared by every program built for this target (and by its
        ``with_profile`` variants); the queue has profiling enabled (``--profile``, the tuner).
    """

    info: DeviceInfo
    device: object
    profile: DeviceProfile
    _opened: dict = field(default_factory=dict, repr=False)  # context and queue, shared

    @classmethod
    def open(cls, device=None, profile=None) -> Target:
        """The device a user asked for, opened: ``device`` is a selector (``P:D``, a device
        number, a name fragment or type such as ``pocl``, ``gpu``, ``cpu``; None: the
        ``CONVGRAPH_DEVICE`` variable, else the first GPU, else the first CPU) or a Target,
        which is returned as it is. ``profile(info)`` chooses the profile (default: this
        module's ``profile_for``, the device family's defaults with the device's tuning table;
        tests replace it to run another family's tiles).

        Raises DeviceError when no device matches (listing those there are).
        """
        if isinstance(device, Target):
            return device
        info, cl_device = select_device(device)
        return cls(info, cl_device, (profile or profile_for)(info))

    def with_profile(self, profile: DeviceProfile) -> Target:
        """The same device, context and queue, generating code with another profile (the
        tuner's candidates, a test's other device family)."""
        return replace(self, profile=profile)

    @property
    def context(self):
        if "context" not in self._opened:
            import pyopencl as cl

            self._opened["context"] = cl.Context([self.device])
        return self._opened["context"]

    @property
    def queue(self):
        if "queue" not in self._opened:
            import pyopencl as cl

            self._opened["queue"] = cl.CommandQueue(
                self.context, self.device,
                properties=cl.command_queue_properties.PROFILING_ENABLE)
        return self._opened["queue"]

    @property
    def label(self) -> str:
        return self.info.label


@dataclass
class Built:
    """A plan's program, built for a target: what ``build`` returns.

    ``cache_hit``, ``seconds`` and ``key`` describe the build (from the on-disk cache or not,
    how long it took, the cache key); ``prebuilt`` what compiling the kernels in parallel
    did after a cold PoCL build (``runtime/parallel.py``; None when it did not run);
    ``executor()`` runs the plan with it.
    """

    plan: object
    target: Target
    source: str
    program: object
    cache_hit: bool
    seconds: float
    key: str
    prebuilt: dict | None = None  # what parallel.prebuild did after a cold PoCL build

    def executor(self):
        """A fresh Executor running this plan's launches with this program (its own buffers)."""
        target = self.target
        return Executor(target.context, target.queue, target.device, target.info, self.plan,
                        self.program)


def build(plan, target: Target, title: str, options=None, source: str | None = None) -> Built:
    """Build the program holding ``plan``'s kernels for ``target`` (or load it from the cache).

    ``title`` names the program in its header comment (and so in saved failures); ``options``
    replaces the profile's build options where a program needs other ones; ``source`` is the
    program to build instead of the one generated from ``plan`` (a compiled artifact's stored
    kernels.cl, which must define the plan's kernels).

    Raises KernelBuildError when the device's compiler rejects the source: the source, options
    and log are saved under the cache's ``failures/`` and the message names the kernel at fault.

    >>> built = build(plan, Target.open(), "lenet5")  # doctest: +SKIP
    >>> built.cache_hit, round(built.seconds, 1)      # doctest: +SKIP
    (False, 0.4)
    """
    source = program_source(plan, title) if source is None else source
    options = list(target.profile.build_options if options is None else options)
    result = build_program(target.context, target.device, target.info, source, options)
    prebuilt = None
    if wants_prebuild(target.info, result.cache_hit, result.seconds):
        # PoCL compiles each kernel at its first launch, one at a time: do it now, in parallel
        prebuilt = prebuild(plan, target, result.program, source, options)
    return Built(plan, target, source, result.program, result.cache_hit, result.seconds,
                 result.key, prebuilt)
