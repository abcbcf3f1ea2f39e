"""Specs: strict YAML in, a checked list of layers out (see forms.py for the three forms)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from convgraph.errors import COMMAND_LINE, Location, SpecError
from convgraph.spec.attrs import Written
from convgraph.spec.forms import Spec, read_spec
from convgraph.spec.yamlload import YamlMap, load_yaml_file, load_yaml_text

__all__ = ["Spec", "load_spec", "parse_override"]


def load_spec(source, overrides=()) -> Spec:
    """Read a spec from a file path or a dict, apply ``KEY=VALUE`` overrides, and check it.

    >>> spec = load_spec({"input": "32x32x3", "pattern": "[INPUT-CONV(12, 3, pad=1)-RELU-FC(10)]"})
    >>> [layer.name for layer in spec.layers]
    ['input', 'conv1', 'relu1', 'fc1']
    """
    if isinstance(source, dict):
        name = str(source.get("name", "<dict>"))
        data = load_yaml_text(yaml.safe_dump(source, sort_keys=False), name)
    else:
        name = os.fspath(source)
        if not Path(name).is_file():
            raise SpecError(
                "no such spec file." if not Path(name).exists() else "this is not a file.",
                location=Location(name, 1, 1),
                hint="give the path of a .yaml spec (see specs/ for examples).",
            )
        data = load_yaml_file(name)
    per_layer: dict[str, dict[str, Written]] = {}
    for override in overrides:
        path, value = parse_override(override)
        if is_layer_setting(path):
            per_layer.setdefault(path[0], {})[path[1]] = Written(value, COMMAND_LINE,
                                                                 COMMAND_LINE)
        else:
            apply_override(data, path, value)
    return read_spec(data, name, per_layer)


# the first key of an override that reaches into the spec's own sections (train.lr,
# defaults.conv.size); any other NAME.KEY sets the setting KEY of the layer NAME
SECTIONS = ("train", "defaults", "blocks", "nodes", "layers", "pattern")


def is_layer_setting(path: list[str]) -> bool:
    """``['dropout1', 'rate']`` (from ``--set dropout1.rate=0``) is a layer's setting."""
    return len(path) == 2 and path[0] not in SECTIONS


def parse_override(text: str) -> tuple[list[str], object]:
    """``train.lr=0.1`` -> (['train', 'lr'], 0.1); a bare training key means ``train.KEY``;
    ``conv1.stride=2`` -> (['conv1', 'stride'], 2), a layer's setting."""
    where = COMMAND_LINE
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(
            f"override '{text}' is not KEY=VALUE.",
            location=where,
            hint="e.g. --set lr=0.05 or --set train.epochs=3.",
        )
    path = key.strip().split(".")
    if len(path) == 1:
        path = ["train", *path] if path[0] not in ("name", "input", "rounding") else path
    value = load_yaml_text(raw, "<command line>") if raw.strip() else None
    return path, value


def apply_override(data, path: list[str], value) -> None:
    where = COMMAND_LINE
    if not isinstance(data, YamlMap):
        return  # read_spec reports the real problem
    target = data
    for part in path[:-1]:
        if part not in target or target[part] is None:
            target[part] = YamlMap(where)
            target.key_locations[part] = where
        target = target[part]
        if not isinstance(target, YamlMap):
            raise SpecError(
                f"cannot override inside '{part}': it is not a mapping.", location=where,
                hint=f"set '{part}' whole (--set {part}=VALUE), or override a key of a "
                     "mapping such as train (--set train.lr=0.05)."
            )
    target[path[-1]] = value
    target.key_locations[path[-1]] = where
    target.value_locations[path[-1]] = where
