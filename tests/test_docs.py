"""The README documents every op, alias and setting the registry knows, and how to add an op."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from convgraph.ops.base import REGISTRY
from convgraph.ops.cases import Case
from convgraph.spec.train import TRAIN_PARAMS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_op_is_documented(name):
    op = REGISTRY[name]
    ops_section = README[README.index("### Ops"):]
    rows = [line for line in ops_section.splitlines() if line.startswith("| `")]
    row = next((line for line in rows if f"`{name}`" in line.split("|")[1]), None)
    assert row is not None, f"op {name} has no row in the README's op table"
    for word in (*op.aliases, *op.params):
        assert f"`{word}`" in row, f"{name}: '{word}' is not in its README row"


def test_train_keys_are_documented():
    for key in TRAIN_PARAMS:
        assert f"`{key}`" in README


def test_every_subpackage_ships_in_the_wheel():
    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(p.parent.relative_to(root).parts)
             for p in root.glob("convgraph/**/__init__.py")}
    assert found | {"convgraph.kernels"} == listed


def _adding_an_op() -> str:
    """The README's "Adding an op" section: from its heading to the next heading."""
    assert "\n### Adding an op\n" in README, "the README has no '### Adding an op' section"
    section = README.split("\n### Adding an op\n", 1)[1]
    return re.split(r"\n#{2,3} ", section, maxsplit=1)[0]


def test_adding_an_op_names_the_places_to_touch():
    """The section says what to add for an activation (its class in ops/activation.py, its ACT_*
    code in kernels/common.cl, its README row) and for a spatial op (a file in ops/, one in
    kernels/, its row), and every file or folder it names exists."""
    section = _adding_an_op()
    spans = re.findall(r"`([^`]+)`", section)
    for place in ("convgraph/ops/activation.py", "kernels/common.cl", "convgraph/ops/<family>.py",
                  "kernels/<family>.cl", "convgraph/ops/cases.py", "cases", "ACT_*"):
        assert place in spans, f"the 'Adding an op' section does not name `{place}`"
    assert section.count("its row in the Ops table") >= 2  # both recipes end with the README row
    common = (ROOT / "kernels" / "common.cl").read_text()
    for macro in ("ACTIVATE", "ACTIVATE_BACKWARD"):
        assert macro in spans and f"#define {macro}(" in common, macro
    for span in spans:
        if "/" not in span or " " in span or "(" in span:
            continue
        path = ROOT / span.split("<", 1)[0]  # convgraph/ops/<family>.py: its folder
        assert path.exists(), f"the 'Adding an op' section names {span}, which does not exist"


def test_adding_an_op_examples_are_declared_cases():
    """Each ``Case(...)`` the section shows is valid and is one of the cases an op declares, so
    the examples change when the Case type or the cases do."""
    examples = re.findall(r"`(Case\(.*?\))`", _adding_an_op(), re.S)
    assert len(examples) >= 3
    declared = [case for op in REGISTRY.values() for case in op.cases]
    for text in examples:
        case = eval(text, {"Case": Case})  # noqa: S307 - the README's own example
        assert case in declared, f"the README's {text} is not a declared case"
