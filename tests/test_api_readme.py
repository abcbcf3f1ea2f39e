"""The README's Python API tour runs as written, and names every callback convgraph offers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import convgraph.callbacks

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
MARKER = "<!-- tested: tests/test_api_readme.py runs the next python block -->"


def _api_section() -> str:
    section = README.split("\n## Python API\n", 1)[1]
    return re.split(r"\n## ", section, maxsplit=1)[0]


def _tour() -> str:
    """The python block after the marker in the README's Python API section."""
    section = _api_section()
    assert MARKER in section, "the Python API section has lost its tested tour"
    after = section.split(MARKER, 1)[1]
    match = re.match(r"\s*```python\n(.*?)\n```", after, re.S)
    assert match, "the tour's marker is not followed by a python block"
    return match.group(1)


@pytest.mark.device
@pytest.mark.timeout(300)
def test_the_readme_tour_runs(tmp_path, monkeypatch, capsys):
    """Run in a fresh folder holding the repository's specs: every line works, and it did what
    its comments say."""
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(_tour(), "README.md (Python API tour)", "exec"), names)  # noqa: S102
    history, model = names["history"], names["model"]
    assert 1 <= len(history) <= 3 and history.epoch == list(range(1, len(history) + 1))
    assert len(history.history["test_accuracy"]) == len(history)
    assert len(model.trainer.test_data) == 103  # the last 10% of 1,024
    assert names["scores"].shape == (500, 10) and names["params"] == 31_066
    assert (tmp_path / "runs" / "seed-best.npz").is_file() and (tmp_path / "seed.npz").is_file()
    assert names["text"] in capsys.readouterr().out  # summary() printed what it returns
    assert np.isfinite(names["result"].loss)


def test_every_callback_is_documented():
    section = _api_section()
    for name in convgraph.callbacks.__all__:
        assert f"`{name}" in section, f"convgraph.callbacks.{name} is not in the Python API section"
