"""The README documents every op, alias and setting the registry knows."""

from __future__ import annotations

from pathlib import Path

import pytest

from convgraph.ops.base import REGISTRY
from convgraph.spec.train import TRAIN_PARAMS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


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
