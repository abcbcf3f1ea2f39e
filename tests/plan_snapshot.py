"""What the code generator decides, as digests: the kernels and launches of every plan.

    python -m tests.plan_snapshot --update     # rewrite tests/plans.json after a deliberate change
    python -m tests.plan_snapshot OUT.json [NETS.json]   # digests of specs/, cases and NETS

For every spec in specs/ and every network the op registry's cases declare (device cases in
their forward and trainable form, finite-difference cases), under the CPU, GPU and Oclgrind
profiles (untuned defaults), this digests the inference plans (buffers shared and separate) and
the training plans (SGD and Adam): the program source as the compiler writes it (each kernel
file's text standing as its name), every launch (kernel, node, sizes, work-group, FLOPs, bytes,
tuning site, arguments by buffer name) and the buffer tables.
tests/test_plans.py compares them with tests/plans.json, so a refactor that should not move
behaviour proves it did not, and a change that does move it says so in its commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "plans.json"
sys.path.insert(0, str(ROOT))

from convgraph.codegen import profile as profiles  # noqa: E402
from convgraph.codegen import source  # noqa: E402
from convgraph.codegen.plan import plan_forward  # noqa: E402
from convgraph.codegen.source import program_source  # noqa: E402
from convgraph.codegen.training import plan_training  # noqa: E402
from convgraph.errors import ConvgraphError  # noqa: E402
from convgraph.pipeline import analyse  # noqa: E402

PROFILES = {"cpu": profiles.CPU, "gpu": profiles.GPU, "oclgrind": profiles.OCLGRIND}
BATCH = 64


def _arg_text(plan, arg) -> str:
    name = plan.buffer_name(arg)
    if name is not None:
        return name
    return "scalar:" + (arg[0] if isinstance(arg, tuple) else str(arg.name))


def plan_text(plan, title: str) -> str:
    """The program source, every launch of every group, and the buffer table, as text.

    The kernel files' own text stands in the source as its file name: what is digested is
    what the compiler decides (which kernels, specialised how, in what order, launched how),
    so a new activation's lines in common.cl or a new kernel file change no recorded plan."""
    real = source.kernel_file
    source.kernel_file = lambda family: f"/* kernels/{family}.cl */\n"
    try:
        lines = [program_source(plan, title)]
    finally:
        source.kernel_file = real
    for group, launches in plan.launch_groups().items():
        lines.append(f"== {group}")
        for launch in launches:
            args = " ".join(_arg_text(plan, arg) for arg in launch.args)
            lines.append(f"{launch.kernel} {launch.node} g={launch.global_size} "
                         f"b={launch.batch_axis} l={launch.local_size} f={launch.flops} "
                         f"m={launch.bytes} d={launch.batch_divisor} s={launch.site} [{args}]")
    sizes = dict(plan.buffer_sizes(BATCH))
    if "train" in plan.launch_groups():  # inference plans' parameters were not listed before
        sizes.update(plan.fixed_sizes())
    lines += [f"{name} {size}" for name, size in sorted(sizes.items())]
    return "\n".join(lines)


def networks(extra: dict | None = None) -> dict:
    """{key: spec} for every spec in specs/ and every declared case's network (and ``extra``).

    A key names the network by its content (a spec file's text, a case's spec) as well as by
    where it comes from, so adding, removing or reordering cases never makes another network's
    plan look changed: only the same network planned differently does."""
    from convgraph.ops.cases import cases_of
    from tests.test_kernels import backward_spec

    def key(label: str, content) -> str:
        text = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
        return f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"

    from tests.test_zoo import NETWORKS as ZOO  # planned in tests/test_zoo.py; here 25 s more

    nets = {key(f"spec-{path.stem}", path.read_text()): str(path)
            for path in sorted((ROOT / "specs").glob("*.yaml")) if path.stem not in ZOO}
    for op, _, case in cases_of("device"):
        nets[key(f"device-{op}", case.spec())] = case.spec()
        nets[key(f"backward-{op}", backward_spec(case))] = backward_spec(case)
    for op, _, case in cases_of("gradient"):
        nets[key(f"gradient-{op}", case.spec())] = case.spec()
    nets.update(extra or {})
    return nets


def snapshot(nets: dict) -> dict[str, str]:
    """{network/profile/mode: sha256 of its plan text}."""
    digests = {}
    for name, spec in nets.items():
        graph = analyse(spec)
        for family, profile in PROFILES.items():
            texts = {"infer": plan_text(plan_forward(graph, profile), name),
                     "separate": plan_text(plan_forward(graph, profile, False), name)}
            for optimizer in ("sgd", "adam"):
                try:
                    plan = plan_training(graph, profile, optimizer, graph.graph["train"])
                except ConvgraphError:  # not trainable (no class scores)
                    continue
                texts[f"train-{optimizer}"] = plan_text(plan, name + " (training)")
            for mode, text in texts.items():
                digests[f"{name}/{family}/{mode}"] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return digests


def write(path: Path, digests: dict) -> None:
    path.write_text(json.dumps(digests, indent=0, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    if argv == ["--update"]:
        write(GOLDEN, snapshot(networks()))
        print(f"wrote {GOLDEN}")
        return 0
    extra = json.loads(Path(argv[1]).read_text()) if len(argv) > 1 else None
    digests = snapshot(networks(extra))
    write(Path(argv[0]), digests)
    print(f"{len(digests)} plans")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
