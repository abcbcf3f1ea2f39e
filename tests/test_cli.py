"""`convgraph compile` and `convgraph check` as a user runs them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from convgraph.graph import signature
from convgraph.pipeline import analyse

from .conftest import SPECS


def test_compile_prints_the_summary_table(cli):
    status, out, err = cli("compile", SPECS / "seed.yaml")
    assert status == 0 and err == ""
    for expected in ("conv1", "32x32x12", "16x16x12", "1x1x10", "31,066", "total"):
        assert expected in out
    assert "31,066 parameters" in out and "per image forward" in out


def test_compile_json_contract(cli):
    status, out, _ = cli("compile", SPECS / "resnet8.yaml", "--json")
    assert status == 0
    summary = json.loads(out)  # exactly one JSON object: json.loads rejects trailing text
    assert summary["name"] == "resnet8" and summary["input"] == [32, 32, 3]
    names = [node["name"] for node in summary["nodes"]]
    position = {name: i for i, name in enumerate(names)}
    for node in summary["nodes"]:
        assert {"name", "op", "inputs", "output_shape", "params", "flops"} <= set(node)
        assert all(position[source] < position[node["name"]] for source in node["inputs"])
    fc = summary["nodes"][-1]
    assert fc["op"] == "fc" and fc["output_shape"] == [1, 1, 10]
    assert summary["total_params"] == sum(n["params"] for n in summary["nodes"]) == 78_042
    assert summary["total_flops"] == sum(n["flops"] for n in summary["nodes"])


def test_compile_output_directory(cli, tmp_path, write_spec):
    target = tmp_path / "artifact"
    status, out, _ = cli("compile", SPECS / "lenet5.yaml", "-o", target)
    assert status == 0 and str(target) in out
    assert json.loads((target / "graph.json").read_text())["total_params"] == 61_706
    assert "lenet5" in (target / "summary.txt").read_text()
    again = analyse(write_spec((target / "spec.yaml").read_text(), "again.yaml"))
    assert signature(again) == signature(analyse(SPECS / "lenet5.yaml"))


def test_expand_prints_graph_form(cli):
    status, out, _ = cli("compile", SPECS / "seed.yaml", "--expand")
    assert status == 0
    assert "nodes:" in out and "conv1: {op: conv, filters: 12, size: 3" in out


def test_graph_as_dot_and_svg(cli, tmp_path):
    dot_file = tmp_path / "net.dot"
    status, out, _ = cli("compile", SPECS / "resnet8.yaml", "--graph", dot_file)
    text = dot_file.read_text()
    assert status == 0 and text.startswith('digraph "resnet8"')
    assert '"res2/add" -> "res2/relu2" [' in text and "16x16x32" in text
    if shutil.which("dot"):
        svg = tmp_path / "net.svg"
        assert cli("compile", SPECS / "resnet8.yaml", "--graph", svg)[0] == 0
        assert "<svg" in svg.read_text()


def test_graph_without_graphviz_writes_dot_and_says_so(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    status, out, _ = cli("compile", SPECS / "seed.yaml", "--graph", tmp_path / "net.svg")
    assert status == 0
    assert "not installed" in out and (tmp_path / "net.dot").read_text().startswith("digraph")
    assert not (tmp_path / "net.svg").exists()


def test_check_reports_each_spec(cli, write_spec):
    bad = write_spec('input: 7x7x1\npattern: "[INPUT-POOL(2)]"\n', "bad.yaml")
    status, out, err = cli("check", SPECS / "seed.yaml", bad, SPECS / "lenet5.yaml")
    assert status == 2
    assert out.count("ok ") == 2
    assert f"{bad}:2:18" in err and "not a whole number" in err


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_compiles(cli, path):
    status, out, err = cli("check", path)
    assert (status, err) == (0, "")


def test_set_override_on_the_command_line(cli):
    status, out, _ = cli("compile", SPECS / "seed.yaml", "--expand", "--set", "lr=0.2",
                         "--set", "train.batch=32")
    assert status == 0 and "lr: 0.2" in out and "batch: 32" in out


def test_console_script_runs_as_a_process(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: 32x32x3\npattern: \"[INPUT-COVN]\"\n")
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "check", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{bad}:2:18" in done.stderr and "Did you mean 'conv'" in done.stderr


def test_every_option_is_in_the_readme():
    """Each long option of each command (--random-weights, --top, --output, ...) is named in the
    README, so a new flag comes with its documentation."""
    import argparse
    from pathlib import Path

    from convgraph.cli import build_parser

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    commands = next(a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {option}" for name, parser in commands.choices.items()
               for action in parser._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"
               and not re.search(rf"(?<![\w-]){option}(?![\w-])", readme)]
    assert not missing, "not in the README: " + ", ".join(missing)
