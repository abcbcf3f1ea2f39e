"""Shared test helpers: writing specs to real files and running the CLI in-process."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from convgraph.cli import main

SPECS = Path(__file__).resolve().parent.parent / "specs"


@pytest.fixture
def write_spec(tmp_path):
    """write_spec(text, name='spec.yaml') -> path of a real spec file holding the dedented text."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


@pytest.fixture
def cli(capsys):
    """cli('compile', path, ...) -> (exit status, stdout, stderr), run in-process."""

    def run(*args) -> tuple[int, str, str]:
        status = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return status, out, err

    return run
