"""The compiled artifact: a folder holding a model as the compiler made it, every file checksummed.

``convgraph compile SPEC -o DIR`` and ``model.save(DIR)`` write it; ``convgraph.load(DIR)``,
``convgraph run DIR`` and ``convgraph eval DIR`` read it. The folder holds

- ``spec.yaml``: the expanded spec (graph form, every setting explicit), which rebuilds the network;
- ``graph.json``: the summary (``compile --json``'s nodes and totals), the device and the launches;
- ``kernels.cl`` and ``plan.json``: the program and the plan the compiler generated for the device
  it compiled for (``plan.txt`` is the plan as a person reads it);
- ``summary.txt``: the summary table;
- ``weights.npz``: the weights, when given or trained, in the checkpoint format (with the input
  normalisation and the class names);
- ``manifest.json``: every file's SHA-256 and size, the convgraph version, the network's hash, the
  planned batch and the device (its DeviceInfo record), under a checksum of its own.

Reading verifies the manifest before anything else: a missing, resized or altered file is a
DataError naming it, never a silent recompile from the spec. The checksums detect damage, not
tampering (anyone can re-sign a manifest). On the device it was compiled for, by the same convgraph
version, the stored ``kernels.cl`` is what runs (built through ``runtime.target.build``, with the
plan rebuilt from ``plan.json``); on another device or version the model is re-planned and rebuilt
for it, with a one-line note on stderr.

A folder is written beside its target under a temporary name and renamed into place once complete,
so an existing artifact is replaced only by a whole new one; a folder that is neither empty nor an
artifact is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from convgraph import signals
from convgraph.codegen.launches import Buffer, Ints, KernelSpec, Launch, Scalar
from convgraph.codegen.layout import Layout, PlanarLayout
from convgraph.codegen.plan import Plan
from convgraph.codegen.tuning import Site
from convgraph.core import DeviceInfo, Volume
from convgraph.errors import DataError, OutputError, UsageError

FORMAT = "convgraph-artifact-1"
MANIFEST = "manifest.json"
SPEC, GRAPH, SUMMARY = "spec.yaml", "graph.json", "summary.txt"
KERNELS, PLAN, PLAN_TEXT = "kernels.cl", "plan.json", "plan.txt"
WEIGHTS = "weights.npz"
ALWAYS = (SPEC, GRAPH, SUMMARY)  # in every artifact
COMPILED = (KERNELS, PLAN, PLAN_TEXT)  # in one compiled for a device
KNOWN = (*ALWAYS, *COMPILED, WEIGHTS)  # the only names a manifest may list
MAX_MANIFEST = 1 << 20  # a manifest lists seven files: a bigger one is not ours
# what makes a device "the same" for a stored program (the build cache's key holds these too)
SAME_DEVICE_FIELDS = ("platform", "name", "vendor", "driver_version")


def note(text: str) -> None:
    """A one-line note on stderr: the artifact is usable, but not as it was stored. Names from
    the manifest are a file's text: printed escaped (control characters, markup)."""
    from convgraph.display import shown

    print(f"convgraph: note: {shown(text)}", file=sys.stderr)


# ----------------------------------------------------------------------------- the plan as data

def _arg_record(arg) -> dict:
    if isinstance(arg, Scalar):
        return {"scalar": arg.name}
    if isinstance(arg, Ints):
        return {"ints": list(arg.values)}
    return {"buffer": [arg.kind, arg.node, arg.key, arg.slot]}


def _arg_from(record: dict):
    if "scalar" in record:
        return Scalar(record["scalar"])
    if "ints" in record:
        return Ints(tuple(record["ints"]))
    kind, node, key, slot = record["buffer"]
    return Buffer(kind, node, key, slot)


def _layout_record(layout: Layout) -> dict:
    planar = {"planar": True} if isinstance(layout, PlanarLayout) else {}  # the network input
    return {"volume": list(layout.volume), "stride_c": layout.stride_c, "halo": list(layout.halo),
            **planar}


def plan_record(plan: Plan) -> dict:
    """An inference plan as JSON-ready data: layouts, kernels, launches, buffers, sites
    (``plan_from_record`` rebuilds the identical Plan)."""
    record = {
        "input": plan.input, "output": plan.output,
        "storage_of": dict(plan.storage_of),
        "layouts": {name: _layout_record(layout) for name, layout in plan.layouts.items()},
        "kernels": [{"name": spec.name, "family": spec.family, "selector": spec.selector,
                     "defines": spec.defines, "layers": list(spec.layers)}
                    for spec in plan.kernels.values()],
        "launches": [{"kernel": launch.kernel, "node": launch.node,
                      "global_size": list(launch.global_size), "batch_axis": launch.batch_axis,
                      "local_size": None if launch.local_size is None else list(launch.local_size),
                      "args": [_arg_record(arg) for arg in launch.args], "flops": launch.flops,
                      "bytes": launch.bytes, "batch_divisor": launch.batch_divisor,
                      "site": launch.site,
                      **({"per_params": True} if launch.per_params else {}),
                      **({"exact_local": True} if launch.exact_local else {})}
                     for launch in plan.launches],
        "buffer_of": dict(plan.buffer_of),
        "buffer_elements": list(plan.buffer_elements),
        "sites": [{"key": site.key, "node": site.node, "selector": site.selector,
                   "space": list(site.space)} for site in plan.sites.values()],
    }
    if plan.work:  # fixed scratch (Winograd's transformed filters); absent from older records
        record["work"] = [[node, key, count] for (node, key), count in plan.work.items()]
    return record


def plan_from_record(record: dict, graph: nx.DiGraph, where: str) -> Plan:
    """The Plan ``plan_record`` wrote, for ``graph``; DataError naming ``where`` when the record
    is not one (or does not fit the graph)."""
    try:
        layouts = {name: (PlanarLayout if item.get("planar") else Layout)(
                       Volume(*item["volume"]), int(item["stride_c"]), tuple(item["halo"]))
                   for name, item in record["layouts"].items()}
        kernels = {item["name"]: KernelSpec(item["name"], item["family"], item["selector"],
                                            dict(item["defines"]), list(item["layers"]))
                   for item in record["kernels"]}
        launches = [Launch(item["kernel"], item["node"], tuple(item["global_size"]),
                           item["batch_axis"],
                           None if item["local_size"] is None else tuple(item["local_size"]),
                           [_arg_from(arg) for arg in item["args"]], item["flops"],
                           item["bytes"], item["batch_divisor"], item["site"],
                           exact_local=bool(item.get("exact_local", False)),
                           per_params=bool(item.get("per_params", False)))
                    for item in record["launches"]]
        sites = {item["key"]: Site(item["key"], item["node"], item["selector"],
                                   tuple(item["space"])) for item in record["sites"]}
        plan = Plan(dict(record["storage_of"]), layouts, kernels, launches,
                    dict(record["buffer_of"]), list(record["buffer_elements"]), record["input"],
                    record["output"], sites, graph,
                    {(node, key): int(count) for node, key, count in record.get("work", [])})
        same = plan_record(plan) == record
    except (KeyError, TypeError, ValueError, AttributeError):
        same = False
    if not same or set(plan.storage_of) != set(graph) \
            or any(launch.kernel not in plan.kernels for launch in plan.launches) \
            or set(plan.storage_of.values()) - set(plan.layouts):
        raise DataError(f"{where} is not an inference plan of this network that this convgraph "
                        "can read.", hint="compile the artifact again (convgraph compile "
                                          "SPEC -o DIR).")
    return plan


# ----------------------------------------------------------------------------- writing

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_checksum(manifest: dict) -> str:
    rest = {key: value for key, value in manifest.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def sign(manifest: dict) -> dict:
    """``manifest`` with its checksum (over every other field) set."""
    return dict(manifest, checksum=_manifest_checksum(manifest))


def graph_record(graph: nx.DiGraph, model=None) -> dict:
    """graph.json: the summary, and for a compiled model its device, batch and launches."""
    from convgraph.summary import summary_json

    record = summary_json(graph)
    if model is not None:
        record.update(device=model.info.as_json(), batch=model.batch,
                      kernels=model.kernel_records())
    return record


def _write_files(folder: Path, graph: nx.DiGraph, model, weights: bool) -> None:
    from rich.console import Console

    from convgraph.spec.expand import expanded_yaml
    from convgraph.summary import plan_text, print_summary

    (folder / SPEC).write_text(expanded_yaml(graph.graph["spec"]))
    (folder / GRAPH).write_text(json.dumps(graph_record(graph, model), indent=2) + "\n")
    with open(folder / SUMMARY, "w") as handle:
        print_summary(graph, Console(file=handle, width=140, color_system=None))
    if model is None:
        return
    (folder / KERNELS).write_text(model.source)
    (folder / PLAN).write_text(json.dumps(plan_record(model.plan), indent=1) + "\n")
    (folder / PLAN_TEXT).write_text(plan_text(model))
    if weights:
        model.save(folder / WEIGHTS)


def _manifest(folder: Path, graph: nx.DiGraph, model) -> dict:
    from convgraph import __version__
    from convgraph.train.checkpoint import network_hash

    files = {}
    for name in sorted(os.listdir(folder)):
        files[name] = {"sha256": _sha256(folder / name), "size": (folder / name).stat().st_size}
    return sign({"format": FORMAT, "convgraph": __version__, "name": graph.graph["name"],
                 "network": network_hash(graph),
                 "batch": None if model is None else model.batch,
                 "device": None if model is None else model.info.as_json(), "files": files})


def check_target(folder, what: str = "the artifact folder") -> Path:
    """``folder`` as a place an artifact may be written: created if missing, empty or an
    artifact (which is replaced), in a folder that takes the new one beside it; OutputError
    otherwise, before any work starts."""
    from convgraph.files import writable_folder

    target = writable_folder(folder, what)
    if any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise OutputError(f"{what} {target} holds files and is not a compiled artifact (no "
                          f"{MANIFEST}), so it is not overwritten.",
                          hint="choose a new or empty folder, or remove that one first.")
    parent = target.absolute().parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {target} cannot be replaced: its folder {parent} is not "
                          "writable (the artifact is written beside it, then renamed into "
                          "place).", hint="choose a folder in a folder you can write.")
    return target


def write_artifact(folder, graph: nx.DiGraph, model=None, weights: bool = False,
                   what: str = "the artifact folder") -> Path:
    """Write the artifact of ``graph`` (and of ``model``, compiled for its device: kernels,
    plan; with ``weights``, its parameters as weights.npz) to ``folder``, atomically.

    Raises OutputError when the folder cannot be written, or is neither empty nor an artifact.

    >>> write_artifact("out/lenet5", model.graph, model, weights=True)  # doctest: +SKIP
    """
    target = check_target(folder, what)
    _remove_dead_writers(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=_temporary_prefix(target),
                                    suffix=".tmp"))
    try:
        _write_files(staging, graph, model, weights)
        manifest = _manifest(staging, graph, model)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _sync(staging)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would keep others out
        with signals.deferred():  # a Ctrl-C between the renames would leave no artifact there
            _replace(staging, target)
    except OSError as exc:
        raise OutputError(f"cannot write the compiled artifact to {target}: "
                          f"{exc.strerror or exc}.",
                          hint="choose a folder you can write (it is created if missing)."
                          ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _temporary_prefix(target: Path, kind: str = "") -> str:
    """``.<name>.<kind><pid>.``, the name cut so the folder's name stays within 255 bytes; the
    pid tells a later write whether the writer is still alive."""
    return f".{target.name[:120]}.{kind}{os.getpid()}."


def _remove_dead_writers(target: Path) -> None:
    """Remove the temporary folders beside ``target`` of writes that were killed (their
    writer is dead): never one a live process is writing."""
    import re

    from convgraph.train.checkpoint import pid_alive

    pattern = re.compile(re.escape(f".{target.name[:120]}.") + r"(?:old\.)?(\d+)\..*\.tmp\Z")
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        found = pattern.match(entry.name)
        if found and entry.is_dir() and not entry.is_symlink() \
                and not pid_alive(int(found.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _sync(folder: Path) -> None:
    """Every file of ``folder`` on disk before it is renamed into place."""
    for entry in folder.iterdir():
        with open(entry, "rb") as handle:
            os.fsync(handle.fileno())


def _replace(staging: Path, target: Path) -> None:
    """Rename the complete ``staging`` folder to ``target``: over an empty folder directly; an
    existing artifact is moved aside first and removed only once the new one is in place."""
    if target.is_dir() and any(target.iterdir()):
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=_temporary_prefix(target, "old."),
                                    suffix=".tmp"))
        os.replace(target, old)
        try:
            os.replace(staging, target)
        except OSError:
            os.replace(old, target)  # the old artifact back where it was
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(staging, target)  # rename(2) replaces an empty folder


# ----------------------------------------------------------------------------- reading

@dataclass
class Artifact:
    """A verified artifact: its folder, manifest and network (``graph``, from spec.yaml with
    any overrides)."""

    folder: Path
    manifest: dict
    graph: nx.DiGraph

    @property
    def weights(self) -> Path | None:
        """weights.npz, when the artifact holds weights."""
        return self.folder / WEIGHTS if WEIGHTS in self.manifest["files"] else None

    @property
    def batch(self) -> int | None:
        return self.manifest["batch"]

    @property
    def device(self) -> dict | None:
        return self.manifest["device"]

    def stored_plan(self, info: DeviceInfo) -> tuple[Plan, str] | None:
        """(plan, program source) as stored, when they are for this device, this convgraph
        version and this network; else None, after a note saying why they are rebuilt."""
        from convgraph import __version__
        from convgraph.train.checkpoint import network_hash

        device, where = self.device, self.folder
        if device is None:
            note(f"{where} holds no kernels (compiled with --no-kernels); building them for "
                 f"{info.label}.")
            return None
        if any(device.get(key) != getattr(info, key) for key in SAME_DEVICE_FIELDS):
            note(f"{where} was compiled for {device.get('name')} ({device.get('platform')}, "
                 f"driver {device.get('driver_version')}); re-planning and rebuilding its "
                 f"kernels for {info.label}.")
            return None
        if self.manifest["convgraph"] != __version__:
            note(f"{where} was compiled by convgraph {self.manifest['convgraph']}; rebuilding "
                 f"its kernels with convgraph {__version__}.")
            return None
        if network_hash(self.graph) != self.manifest["network"]:
            note(f"the --set overrides change the network of {where}; rebuilding its kernels.")
            return None
        plan = plan_from_record(_json(self.folder, PLAN), self.graph, str(self.folder / PLAN))
        source = (self.folder / KERNELS).read_text()
        missing = [name for name in plan.kernels if f"#define KERNEL_NAME {name}\n" not in source]
        if missing:
            raise DataError(f"{self.folder / KERNELS} does not define the kernel '{missing[0]}' "
                            f"that {self.folder / PLAN} launches.",
                            hint="compile the artifact again (convgraph compile SPEC -o DIR).")
        return plan, source


def is_artifact(path) -> bool:
    """Whether ``path`` is a folder holding a manifest (a compiled artifact, whole or not)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).exists()


def _json(folder: Path, name: str):
    try:
        return json.loads((folder / name).read_text())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _damaged(folder, f"{name} is not JSON") from None


def _damaged(folder: Path, why: str) -> DataError:
    return DataError(f"the compiled artifact {folder} is damaged: {why}; it is not used (nor "
                     "silently recompiled).",
                     hint=f"compile it again: convgraph compile SPEC -o {folder}.")


def read_manifest(folder) -> dict:
    """The manifest of ``folder``, checked: its format and checksum, every file it lists present
    with its size and SHA-256, the files every artifact needs listed. DataError otherwise,
    naming the file at fault."""
    folder = Path(folder)
    size = _regular_file(folder, MANIFEST).st_size
    if size > MAX_MANIFEST:
        raise _damaged(folder, f"{MANIFEST} is {size:,} bytes, not a manifest")
    manifest = _json(folder, MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _damaged(folder, f"{MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("checksum") != _manifest_checksum(manifest):
        raise _damaged(folder, f"{MANIFEST} fails its checksum")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("size"), int) for entry in files.values()) \
            or not isinstance(manifest.get("network"), str) \
            or not isinstance(manifest.get("convgraph"), str) \
            or not _batch_or_none(manifest.get("batch")) \
            or not isinstance(manifest.get("device"), (dict, type(None))):
        raise _damaged(folder, f"{MANIFEST} does not list its files as name: sha256, size")
    unknown = sorted(set(files) - set(KNOWN))
    if unknown:
        raise _damaged(folder, f"{MANIFEST} lists '{unknown[0]}', which is no file of an "
                               "artifact")
    required = ALWAYS + (COMPILED if manifest["device"] is not None else ())
    for name in required:
        if name not in files:
            raise _damaged(folder, f"{MANIFEST} does not list {name}, which it must hold")
    for name, entry in files.items():
        _check_file(folder, name, entry)
    return manifest


def _batch_or_none(value) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool)
                             and value >= 1)


def _regular_file(folder: Path, name: str) -> os.stat_result:
    """The status of ``folder/name``, a regular file (not a link, a FIFO, a folder: such a
    file would block a read or point outside the artifact); DataError otherwise."""
    import stat

    try:
        info = (folder / name).lstat()
    except FileNotFoundError:
        raise _damaged(folder, f"{name} is missing") from None
    except OSError as exc:
        raise _damaged(folder, f"{name} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise _damaged(folder, f"{name} is not a regular file")
    return info


def _check_file(folder: Path, name: str, entry: dict) -> None:
    path = folder / name
    info = _regular_file(folder, name)
    if info.st_size != entry["size"]:
        raise _damaged(folder, f"{name} has {info.st_size:,} bytes, the manifest says "
                               f"{entry['size']:,}")
    try:
        digest = _sha256(path)
    except OSError as exc:
        raise _damaged(folder, f"{name} cannot be read ({exc.strerror or exc})") from None
    if digest != entry["sha256"]:
        raise _damaged(folder, f"{name} fails its checksum (it changed after it was written)")


def read_artifact(folder, overrides=()) -> Artifact:
    """The verified artifact in ``folder``, its network analysed from spec.yaml (with
    ``overrides``); DataError when it is damaged, UsageError when ``folder`` is no artifact.

    >>> read_artifact("out/lenet5").graph.graph["name"]  # doctest: +SKIP
    'lenet5'
    """
    from convgraph.pipeline import analyse
    from convgraph.train.checkpoint import network_hash

    folder = Path(folder)
    if not os.path.lexists(folder / MANIFEST):
        saved = [name for name in ("best.npz", "last.npz") if (folder / name).is_file()]
        if saved and not (folder / SPEC).exists():
            raise UsageError(f"{folder} is a checkpoint folder, not a compiled model.",
                             hint=f"give the checkpoint file itself, e.g. {folder / saved[0]}.")
        if not (folder / SPEC).exists():
            raise UsageError(f"{folder} is a directory without spec.yaml, so it is not a "
                             "compiled model.", hint="give a spec file, or a directory "
                             "written by 'convgraph compile SPEC -o DIR'.")
        raise _damaged(folder, f"it has no {MANIFEST} (written by an older convgraph, or "
                               "incomplete)")
    manifest = read_manifest(folder)
    graph = analyse(folder / SPEC)
    if network_hash(graph) != manifest["network"]:
        raise _damaged(folder, f"{SPEC} describes another network than the one compiled")
    if overrides:  # checked as stored first, so a changed network is the overrides' doing
        graph = analyse(folder / SPEC, overrides)
    return Artifact(folder, manifest, graph)
