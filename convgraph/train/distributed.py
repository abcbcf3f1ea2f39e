"""Data-parallel training: one plan on several devices, the gradients averaged before each step.

Every global batch (drawn exactly as one process draws it: order and augmentation from the seed
and the epoch) is cut into S equal shards, one per device, in a fixed order: MPI rank by rank
(``mpirun -n N convgraph run SPEC --distributed``, one process per device) and, within a
process, device by device (``--device 0:0,0:1``). Each shard runs the training plan's "train"
group on its device (forward, loss, backward); then the gradients are averaged and every device
runs the same "step" group on the same averaged gradients, so every device ends every step with
bit-identical weights. The averaging (Horovod's design):

1. each shard's gradients (of its shard-mean loss) are weighted by the shard's image count and
   packed, in plan order, into one float32 buffer (the *fusion buffer*; batchnorm's running
   statistics ride along, averaged over the shards);
2. the shards of a process are summed on the host in device order, then the processes'
   buffers by ``MPI_Allreduce`` (in pieces of at most FUSION_BYTES), all ranks receiving one
   result;
3. the sum is divided by the global image count: the gradient of the global batch-mean loss,
   up to float32 summation order -- what one process training at the global batch computes.

Dropout masks follow an image's index in the global batch (``sample_offset``), not in its
shard, so N shards drop what one process drops. Batchnorm normalises each shard with the
shard's own statistics (as PyTorch's DistributedDataParallel does without SyncBatchNorm): with
batchnorm, N shards equal one process at the global batch only up to that difference. Its
running statistics are averaged over the shards at every step, so the ranks stay identical.

Rank 0 alone writes checkpoints, metrics and the progress; parameters (and, after a resume,
the optimizer state and the position) are broadcast from it at the start. A start-up handshake
refuses ranks with another network, train: settings, batch, parameter layout, device or
convgraph version (DistributedError, exit status 8); a checksum of every rank's weights is
compared every ``drift_every`` steps. Every collective is non-blocking and polled against
``timeout`` seconds: a rank that waits longer for the others prints one paragraph and aborts
the job (``MPI_Abort`` with status 8), so a hung or vanished peer never hangs the others.
(Under ``mpirun`` a rank that dies is noticed by the launcher, which ends the job within a
second or two with the dead rank's status; the timeout covers what the launcher cannot see.)

>>> session = ShardedSession(graph, ["0:0", "0:1"], batch=64)      # doctest: +SKIP
>>> Trainer(session, data).fit()                                  # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import os
import pickle
import time

import numpy as np

from convgraph import errors
from convgraph.codegen import launches as buffers
from convgraph.errors import (
    ConvgraphError,
    DataError,
    DistributedError,
    TrainingDiverged,
    UsageError,
)
from convgraph.runtime.executor import device_errors
from convgraph.train.checkpoint import network_hash
from convgraph.train.session import StepResult, TrainingSession

# Horovod's default fusion threshold: one Allreduce carries up to this many gradient bytes
FUSION_BYTES = 64 * 2**20
DEFAULT_TIMEOUT = 300.0  # seconds a rank waits for the others in one collective
DRIFT_EVERY = 100  # steps between weight checksums (and at the first step and the end)

# where launchers put a process's rank, world size and rank on its node
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")
LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")

__all__ = ["DRIFT_EVERY", "FUSION_BYTES", "MpiRanks", "Ranks", "ShardedSession", "launched_rank",
           "local_rank", "resume_everywhere"]


def launched_rank() -> int:
    """This process's rank as its launcher (mpirun, srun) set it, before MPI starts; 0 when
    not launched by one. Decides, before anything is built, who may take the checkpoint lock."""
    for name in RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def local_rank() -> int:
    """This process's rank among the ranks on its node (picks its entry of ``--device``)."""
    for name in LOCAL_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


class Ranks:
    """The processes of a run and their collectives; this one is a single process (the
    several-devices-in-one-process case): every collective is the identity."""

    rank, size = 0, 1

    def finish(self) -> None:
        """Training ended well (MpiRanks finalises MPI at exit)."""

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce(self, buffer: np.ndarray, what: str) -> np.ndarray:
        """Sum ``buffer`` over the ranks, in place; every rank gets the same result."""
        return buffer

    def broadcast(self, buffer: np.ndarray, what: str) -> np.ndarray:
        """Rank 0's ``buffer``, in place on every rank."""
        return buffer

    def broadcast_object(self, value, what: str):
        return value

    def gather_object(self, value, what: str) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        return [value]


class MpiRanks(Ranks):
    """The ranks of ``MPI_COMM_WORLD`` (mpi4py), with every collective bounded by ``timeout``.

    Importing mpi4py initialises MPI: under mpirun or srun the ranks find each other; started
    alone, the process is a world of one."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        try:
            import mpi4py

            # finalised here, at exit, and only after training ended well: a rank that stops
            # on an error exits without MPI_Finalize (whose barrier would wait for the
            # others), and the launcher then ends the job at once
            mpi4py.rc.finalize = False
            from mpi4py import MPI
        except ImportError as exc:
            raise UsageError(
                f"--distributed needs mpi4py and an MPI library, and importing mpi4py failed "
                f"({exc}).",
                hint="install Open MPI (apt-get install openmpi-bin libopenmpi-dev) and "
                     "pip install 'convgraph[mpi]', then launch with mpirun -n N.") from None
        self.mpi = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise UsageError(f"the MPI timeout must be a positive number of seconds, got "
                             f"{timeout!r}.", hint="pass --mpi-timeout 300, for example.")
        self.timeout = float(timeout)
        self.wait_seconds = 0.0  # spent in collectives (the benchmark's allreduce time)
        self.finished = False  # set by finish(): training ended well on this rank
        atexit.register(self._finalize)

    def finish(self) -> None:
        """Training ended well: MPI is finalised at exit (a clean end for the launcher)."""
        self.finished = True

    def _finalize(self) -> None:
        if self.finished and not self.mpi.Is_finalized():
            self.mpi.Finalize()

    def _wait(self, request, what: str) -> None:
        """Poll ``request`` until it completes; past the timeout, abort the whole job."""
        started = time.perf_counter()
        deadline = started + self.timeout
        pause = 2e-5
        while not request.Test():
            if time.perf_counter() > deadline:
                self._give_up(what)
            time.sleep(pause)  # not a busy wait: the ranks share the CPU with the devices
            pause = min(pause * 2, 1e-3)
        self.wait_seconds += time.perf_counter() - started

    def _give_up(self, what: str) -> None:
        exc = DistributedError(
            f"rank {self.rank} of {self.size} waited {self.timeout:g} s for the other ranks "
            f"({what}) and stopped: a rank died, hung or is far slower than the others; the "
            "job is aborted, and the last checkpoint (written whole by rank 0) is kept.",
            hint="see the other ranks' messages for why; resume with --resume (any number of "
                 "ranks), or raise --mpi-timeout if steps are legitimately that slow.")
        # to the process's own stderr: a progress bar on the terminal holds sys.stderr while
        # it draws (rich redirects it), and the abort would cut its output off
        os.write(2, f"convgraph: error: {exc}\n".encode())
        time.sleep(1.0)  # the launcher forwards a rank's output asynchronously
        self.comm.Abort(DistributedError.exit_status)

    def allreduce(self, buffer: np.ndarray, what: str) -> np.ndarray:
        step = max(1, FUSION_BYTES // buffer.itemsize)
        for start in range(0, buffer.size, step):  # a few large messages, in a fixed order
            piece = buffer[start:start + step]
            self._wait(self.comm.Iallreduce(self.mpi.IN_PLACE, piece, op=self.mpi.SUM), what)
        return buffer

    def broadcast(self, buffer: np.ndarray, what: str) -> np.ndarray:
        self._wait(self.comm.Ibcast(buffer, root=0), what)
        return buffer

    def broadcast_object(self, value, what: str):
        data = np.frombuffer(pickle.dumps(value), np.uint8) if self.is_root else None
        length = np.array([0 if data is None else data.size], np.int64)
        self.broadcast(length, what)
        if data is None:
            data = np.empty(int(length[0]), np.uint8)
        else:
            data = data.copy()
        self.broadcast(data, what)
        return pickle.loads(data.tobytes())

    def gather_object(self, value, what: str) -> list:
        data = np.frombuffer(pickle.dumps(value), np.uint8)
        lengths = np.zeros(self.size, np.int64)
        lengths[self.rank] = data.size
        self.allreduce(lengths, what)
        longest = int(lengths.max())
        table = np.zeros((self.size, longest), np.uint8)
        table[self.rank, :data.size] = data
        self.allreduce(table, what)  # each row is one rank's, the rest zeros
        return [pickle.loads(table[rank, :lengths[rank]].tobytes()) for rank in range(self.size)]


def copy_buffers(executor, pairs: list[tuple[str, np.ndarray]], to_host: bool) -> None:
    """Copy device buffers into (or from) host arrays, all enqueued before one wait: the
    parameters of a ResNet are dozens of buffers, and a blocking copy each cost more than the
    step (42 ms of a 67 ms M4 step on this machine's PoCL)."""
    cl, queue = executor.cl, executor.queue
    what = "reading the gradients" if to_host else "writing the averaged gradients"
    with device_errors(executor.info, what):
        for name, host in pairs:
            buffer = executor.buffer(name)
            if to_host:
                cl.enqueue_copy(queue, host, buffer, is_blocking=False)
            else:
                cl.enqueue_copy(queue, buffer, host, is_blocking=False)
        queue.finish()


def shard_bounds(count: int, shard: int, shards: int) -> tuple[int, int]:
    """Images [start, stop) of a batch of ``count`` that shard ``shard`` of ``shards`` trains
    on: contiguous, in shard order, sizes differing by at most one."""
    return shard * count // shards, (shard + 1) * count // shards


class ShardedSession:
    """A TrainingSession's interface over S shards of every batch: one TrainingSession per
    local device (``devices``: selectors or Targets), ``ranks.size`` processes of them.

    ``batch`` is the global batch; each device plans for ceil(batch / S). The Trainer drives
    it as it drives a TrainingSession; what it reads back (parameters, optimizer state) is the
    first local device's, the same on every device and rank."""

    def __init__(self, graph, devices, batch: int, params=None, ranks: Ranks | None = None,
                 drift_every: int = DRIFT_EVERY):
        self.ranks = ranks or Ranks()
        devices = list(devices)
        self.shards = self.ranks.size * len(devices)
        if batch < self.shards:
            raise UsageError(f"a global batch of {batch} cannot be split over {self.shards} "
                             "devices (at least one image each).",
                             hint=f"use --batch {self.shards} or more, or fewer devices.")
        self.graph, self.train, self.batch = graph, dict(graph.graph["train"]), batch
        self.shard_batch = math.ceil(batch / self.shards)
        self.first_shard = self.ranks.rank * len(devices)
        self.drift_every = drift_every
        self.sessions = [TrainingSession(graph, device, self.shard_batch, params)
                         for device in devices]
        leader = self.sessions[0]
        self.plan, self.build, self.info = leader.plan, leader.build, leader.info
        self.pieces = self._fusion_layout()
        self.reduce_seconds = 0.0  # host time spent averaging (packing, MPI, unpacking)
        self.handshake()
        self.broadcast_state("the start-up broadcast of rank 0's parameters")

    # ------------------------------------------------------------------ what the Trainer reads

    @property
    def is_root(self) -> bool:
        return self.ranks.is_root

    @property
    def leader(self) -> TrainingSession:
        return self.sessions[0]

    @property
    def step_count(self) -> int:
        return self.leader.step_count

    @step_count.setter
    def step_count(self, value: int) -> None:
        for session in self.sessions:
            session.step_count = value

    @property
    def params(self) -> dict:
        return self.leader.params

    @property
    def ignore_label(self) -> int:
        return self.leader.ignore_label

    def optimizer_state(self) -> dict:
        return self.leader.optimizer_state()

    def set_params(self, params: dict) -> None:
        for session in self.sessions:
            session.set_params(params)

    def load_optimizer_state(self, state: dict) -> None:
        for session in self.sessions:
            session.load_optimizer_state(state)

    def reset_optimizer(self) -> None:
        for session in self.sessions:
            session.reset_optimizer()

    def check_finite(self, kind: str = "weights") -> None:
        self.leader.check_finite(kind)

    def restore_good_weights(self) -> None:
        self.leader.restore_good_weights()

    def device_memory(self) -> int:
        return self.leader.device_memory()

    def describe(self) -> str:
        """How the batch is split, for the opening line of a run."""
        local = len(self.sessions)
        where = (f"{self.ranks.size} ranks x {local} device{'s' if local > 1 else ''}"
                 if self.ranks.size > 1 else f"{local} devices")
        return f"data-parallel over {where}, {self.shard_batch} images per device"

    # ------------------------------------------------------------------ evaluation

    def evaluate_batch(self, x: np.ndarray, labels: np.ndarray) -> StepResult:
        """Loss and correct count of a (global-sized) batch on the first device, in pieces of
        its planned batch; every rank evaluates the whole test set (its figures must be the
        same everywhere: callbacks such as EarlyStopping act on them)."""
        loss = correct = 0.0
        units, predictions = 0, []
        for start in range(0, x.shape[0], self.shard_batch):
            piece = slice(start, start + self.shard_batch)
            result = self.leader.evaluate_batch(x[piece], labels[piece])
            loss, correct = loss + result.loss, correct + result.correct
            units += result.units
            predictions.append(self.leader.last_predictions(result.count))
        self._predictions = np.concatenate(predictions)
        return StepResult(loss, correct, x.shape[0], units)

    def last_predictions(self, count: int) -> np.ndarray:
        return self._predictions[:count]

    # ------------------------------------------------------------------ the step

    def step(self, x: np.ndarray, labels: np.ndarray, lr: float) -> StepResult:
        """One optimizer step on one global batch: every shard's forward and backward pass,
        the averaged gradients, the same optimizer step on every device."""
        count = x.shape[0]
        if count > self.batch:
            raise DataError(f"a batch of {count} images is larger than the planned {self.batch}.")
        checking = [session.begin_step() for session in self.sessions][0]
        if checking:
            self.leader.check_finite("weights")
        # loss, correct, images, shards that ran, units (images, or counted pixels): a shard's
        # gradient is its mean over its units, so it weighs by them
        totals = np.zeros(5, np.float64)
        self._shards_run = []
        fused = np.zeros(self.pieces[-1][3] if self.pieces and self.shards > 1 else 0,
                         np.float32)
        started_shards = []
        for index, session in enumerate(self.sessions):  # every device at work before a wait
            start, stop = shard_bounds(count, self.first_shard + index, self.shards)
            session.sample_offset = start
            if stop > start:  # (none: a last batch smaller than the shard count)
                started_shards.append(
                    (session, session.start_forward_backward(x[start:stop], labels[start:stop],
                                                             lr)))
        for session, images in started_shards:
            result = session.finish_forward_backward(images)
            totals += (result.loss, result.correct, result.count, 1, result.units)
            self._shards_run.append((session, result.count))
            if self.shards == 1:  # the global batch's gradients already: nothing to average
                continue
            started = time.perf_counter()
            fused += self._pack(session, result.units)  # in device order
            self.reduce_seconds += time.perf_counter() - started
        self.ranks.allreduce(totals, "the step's loss")
        if not math.isfinite(totals[0]):  # every rank sees the same sum: all stop together
            raise TrainingDiverged(
                f"the loss became {totals[0]} at step {self.step_count}; training stopped "
                "before the optimizer step could spread it.",
                hint="lower the learning rate (--lr), add batchnorm, or check the data "
                     "normalisation; the last checkpoint is kept.")
        if self.shards > 1:
            started = time.perf_counter()
            self.ranks.allreduce(fused, "the gradient allreduce")
            self._unpack(fused, int(totals[4]), int(totals[3]))
            self.reduce_seconds += time.perf_counter() - started
        if checking:
            self.leader.check_finite("gradients")
        for session in self.sessions:
            session.optimizer_step(self.shard_batch, lr)
        if self.drift_every and (self.step_count == 1
                                 or self.step_count % self.drift_every == 0):
            self.check_drift()
        return StepResult(float(totals[0]), float(totals[1]), int(totals[2]), int(totals[4]))

    def last_pixel_predictions(self, count: int) -> np.ndarray:
        """The top class of every pixel of the last global batch, (count, H, W), on every rank
        (segmentation: the epoch's confusion matrix is global): each rank fills its shards'
        rows, the others stay zero, and the ranks' arrays are summed."""
        predicted = None
        for index, (session, images) in enumerate(self._shards_run):
            start, stop = shard_bounds(count, self.first_shard + index, self.shards)
            mine = session.last_pixel_predictions(images)
            if predicted is None:
                predicted = np.zeros((count,) + mine.shape[1:], np.int32)
            predicted[start:stop] = mine
        if predicted is None:  # this rank ran no shard of a batch smaller than the shard count
            volume = self.plan.layouts[self.plan.logits].volume
            predicted = np.zeros((count, volume.height, volume.width), np.int32)
        return self.ranks.allreduce(predicted, "the step's pixel predictions")

    def _fusion_layout(self) -> list[tuple[str, str, int, int]]:
        """(kind, buffer name, start, stop) of each piece of the fusion buffer: every
        trainable parameter's gradient, then every other parameter (batchnorm's running
        statistics), in plan order."""
        trainable = set(self.plan.trainable)
        names = [("grad", buffers.param_grad(node, key).name) for node, key in self.plan.trainable]
        names += [("buffer", buffers.param(node, key).name) for node, key in self.plan.param_sizes
                  if (node, key) not in trainable]
        pieces, offset = [], 0
        for kind, name in names:
            size = self.leader.executor.fixed[name].size // 4
            pieces.append((kind, name, offset, offset + size))
            offset += size
        return pieces

    def _pack(self, session: TrainingSession, units: int) -> np.ndarray:
        """The shard's contribution: its gradients times its units (images or counted
        pixels), its statistics."""
        packed = np.empty(self.pieces[-1][3] if self.pieces else 0, np.float32)
        copy_buffers(session.executor, [(name, packed[start:stop])
                                        for _, name, start, stop in self.pieces], to_host=True)
        for kind, _, start, stop in self.pieces:
            if kind == "grad":
                packed[start:stop] *= np.float32(units)
        return packed

    def _unpack(self, fused: np.ndarray, units: int, shards: int) -> None:
        """Scale the sums to means and give every device the same arrays."""
        for kind, _, start, stop in self.pieces:
            fused[start:stop] /= np.float32(max(units, 1) if kind == "grad" else shards)
        for session in self.sessions:
            copy_buffers(session.executor, [(name, fused[start:stop])
                                            for _, name, start, stop in self.pieces],
                         to_host=False)

    # ------------------------------------------------------------------ agreement

    def identity(self) -> dict:
        """What every rank must share to train one model together."""
        try:
            from importlib.metadata import version
            convgraph_version = version("convgraph")
        except Exception:  # noqa: BLE001 - a source tree without metadata
            convgraph_version = "unknown"
        layout = [(name, stop - start) for _, name, start, stop in self.pieces]
        devices = sorted({f"{s.info.name} ({s.info.driver_version})" for s in self.sessions})
        return {"convgraph": convgraph_version, "network": network_hash(self.graph),
                "train: settings": hashlib.sha256(json.dumps(
                    self.train, sort_keys=True, default=str).encode()).hexdigest()[:16],
                "batch": self.batch, "devices per rank": len(self.sessions),
                "parameter layout": hashlib.sha256(repr(layout).encode()).hexdigest()[:16],
                "device": ", ".join(devices)}

    def handshake(self) -> None:
        """Refuse to start unless every rank (and every device of this one) agrees."""
        local = {f"{s.info.name} ({s.info.driver_version})" for s in self.sessions}
        if len(local) > 1:
            raise DistributedError(
                f"the devices of one data-parallel run must be alike, but --device names "
                f"{' and '.join(sorted(local))}: their kernels would round differently.",
                hint="name devices of one model (see 'convgraph devices').")
        mine = self.identity()
        everyone = self.ranks.gather_object(mine, "the start-up handshake")
        differences = [f"rank {rank}'s {key} is {theirs[key]!r}, rank 0's {everyone[0][key]!r}"
                       for rank, theirs in enumerate(everyone) for key in theirs
                       if theirs[key] != everyone[0][key]]
        if differences:
            raise DistributedError(
                "the ranks of this run do not train the same model: "
                + "; ".join(differences[:4]) + ("; ..." if len(differences) > 4 else "")
                + ". No rank started.",
                hint="launch every rank with the same spec, options, convgraph version and "
                     "kind of device.")

    def weights_digest(self, session: TrainingSession) -> str:
        digest = hashlib.blake2b(digest_size=16)
        for node, key in self.plan.param_sizes:
            digest.update(session.executor.download(buffers.param(node, key).name).tobytes())
        return digest.hexdigest()

    def check_drift(self) -> None:
        """DistributedError unless every device of every rank holds bit-identical weights."""
        local = [self.weights_digest(session) for session in self.sessions]
        everyone = self.ranks.gather_object(local, "the weights checksum")
        reference = everyone[0][0]
        drifted = [f"rank {rank} device {index}" for rank, digests in enumerate(everyone)
                   for index, digest in enumerate(digests) if digest != reference]
        if drifted:
            raise DistributedError(
                f"the weights of {', '.join(drifted[:4])} differ from rank 0's after step "
                f"{self.step_count}: the shards no longer train one model (a device or "
                "network fault, or a bug).",
                hint="resume from the last checkpoint (--resume), which rank 0 wrote before "
                     "the drift was seen; report it if it happens again.")

    def broadcast_state(self, what: str) -> None:
        """Rank 0's parameters, optimizer state and step count onto every device."""
        names = [buffers.param(node, key).name for node, key in self.plan.param_sizes]
        names += [buffers.state(node, key, slot).name for node, key in self.plan.trainable
                  for slot in range(self.plan.optimizer_slots)]
        sizes = [self.leader.executor.fixed[name].size // 4 for name in names]
        packed = np.empty(sum(sizes) + 1, np.float32)
        if self.is_root:
            offset = 0
            for name, size in zip(names, sizes):
                packed[offset:offset + size] = self.leader.executor.download(name)
                offset += size
        self.ranks.broadcast(packed, what)
        arrays, offset = {}, 0
        for name, size in zip(names, sizes):
            arrays[name] = packed[offset:offset + size]
            offset += size
        for session in self.sessions:
            session.executor.upload(arrays)
            session._good_weights = None  # the next step checks them
        self.step_count = int(self.ranks.broadcast_object(self.step_count, what))


def resume_everywhere(trainer) -> bool:
    """``Trainer.resume`` for a ShardedSession: rank 0 reads and checks its checkpoint folder's
    last.npz (the others may not see the folder), then broadcasts the weights, the optimizer
    state and the position. Any number of ranks may resume what any number saved: the
    checkpoint counts global batches. A refusal on rank 0 is raised on every rank."""
    ranks = trainer.session.ranks
    outcome = None
    if ranks.is_root:
        try:
            found = trainer.resume()
            outcome = ("resumed", found, _resumed_state(trainer))
        except ConvgraphError as exc:
            outcome = ("refused", type(exc).__name__, exc.message, exc.hint)
            ranks.broadcast_object(outcome, "the resume")
            raise
    outcome = ranks.broadcast_object(outcome, "the resume")
    if outcome[0] == "refused":
        kind = getattr(errors, outcome[1], DistributedError)
        raise kind(f"rank 0 could not resume: {outcome[2]}", hint=outcome[3])
    _, found, state = outcome
    if found:
        if not ranks.is_root:
            _take_resumed_state(trainer, state)
        trainer.session.broadcast_state("the broadcast of the resumed state")
    return found


def _resumed_state(trainer) -> dict:
    return {"progress": dict(trainer.progress.__dict__), "mean": trainer.mean,
            "std": trainer.std, "last_lr": trainer.last_lr, "resumed": trainer.resumed,
            "resumed_from": getattr(trainer, "resumed_from", None)}


def _take_resumed_state(trainer, state: dict) -> None:
    for key, value in state["progress"].items():
        setattr(trainer.progress, key, value)
    trainer.mean, trainer.std, trainer.last_lr = state["mean"], state["std"], state["last_lr"]
    trainer.resumed = state["resumed"]
    if state["resumed_from"] is not None:
        trainer.resumed_from = state["resumed_from"]
