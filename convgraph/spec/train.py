"""The ``train:`` section: how a spec's network is trained, checked here and used by the runtime.

Every key has a default, so a spec without ``train:`` still trains; every key can be overridden on
the command line (``--set lr=0.05`` or the dedicated flags of ``convgraph run``).
"""

from __future__ import annotations

from convgraph.data.kinds import KINDS as DATASETS  # the data layer owns the list
from convgraph.errors import ErrorCollector, Location, SpecError, suggest
from convgraph.ops import values as v
from convgraph.ops.base import Param
from convgraph.spec.attrs import default_hint

TRAIN_PARAMS: dict[str, Param] = {
    "loss": Param(v.choice("cross_entropy"), "cross_entropy", "softmax cross-entropy"),
    "label_smoothing": Param(
        v.number(0.0, 1.0, exclusive_max=True),
        0.0,
        "spread this much of the target over all classes",
    ),
    "ignore_label": Param(v.integer(0, 2**31 - 1), 255,
                          "segmentation: the mask value of pixels that count for nothing"),
    "optimizer": Param(v.choice("sgd", "adam", "adamw"), "sgd", "sgd, adam or adamw"),
    "lr": Param(v.number(0.0, 10.0, exclusive_min=True), 0.01, "learning rate"),
    "momentum": Param(v.number(0.0, 1.0, exclusive_max=True), 0.9, "SGD momentum"),
    "nesterov": Param(v.boolean, False, "Nesterov momentum (sgd)"),
    "betas": Param(lambda x: _betas(x), (0.9, 0.999), "Adam's [beta1, beta2]"),
    "weight_decay": Param(v.number(0.0, 1.0), 0.0, "L2 penalty (decoupled for adamw)"),
    "schedule": Param(
        v.choice("constant", "step", "cosine"),
        "constant",
        "learning-rate schedule: constant, step or cosine",
    ),
    "step_epochs": Param(v.integer(1), 10, "step schedule: epochs between decays"),
    "gamma": Param(v.number(0.0, 1.0, exclusive_min=True), 0.1, "step schedule: decay factor"),
    "warmup_epochs": Param(v.integer(0), 0, "linear warm-up from lr/10 over these epochs"),
    "batch": Param(v.integer(1, 65536), 64, "batch size"),
    "epochs": Param(v.integer(1, 100_000), 10, "passes over the training set"),
    "dataset": Param(
        v.choice(*DATASETS),
        "embedded",
        "embedded (generated, no download), fashion-mnist, mnist, cifar10, npz, folder",
    ),
    "data": Param(lambda x: _path(x), None, "file or folder of the data set"),
    "init": Param(v.choice("he", "glorot"), "he", "weight initialisation"),
    "seed": Param(v.integer(0, 2**32 - 1), 0, "seed of every random choice"),
    "normalize": Param(v.boolean, True, "scale inputs to zero mean, unit variance per channel"),
    "crop_pad": Param(v.integer(0, 64), 0, "augment: random crop after padding by this much"),
    "flip": Param(v.boolean, False, "augment: random horizontal flip"),
}


def _betas(value):
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in value
        )
    ):
        return tuple(float(b) for b in value)
    raise ValueError("[beta1, beta2], each in [0, 1)")


def _path(value):
    if value is None or (isinstance(value, str) and value):
        return value
    raise ValueError("a path")


def read_train(section, location: Location) -> dict:
    """Validate a ``train:`` mapping (possibly None) and fill in every default."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise SpecError(
            "'train' must be a mapping of training settings.",
            location=location,
            hint="e.g. train: {optimizer: sgd, lr: 0.01, epochs: 10}.",
        )
    settings = {}
    errors = ErrorCollector()  # each key is independent: all its mistakes at once
    for key in section:
        if key not in TRAIN_PARAMS:
            where = section.where_key(key) if hasattr(section, "where_key") else location
            errors.add(SpecError(
                f"(train) unknown key '{key}'.{suggest(key, TRAIN_PARAMS)}",
                location=where,
                hint="train takes: " + ", ".join(TRAIN_PARAMS) + ".",
            ))
    for key, param in TRAIN_PARAMS.items():
        if key not in section:
            settings[key] = param.default
            continue
        where = section.where(key) if hasattr(section, "where") else location
        try:
            settings[key] = param.parse(section[key])
        except ValueError as why:
            errors.add(SpecError(
                f"(train) '{key}' expects {why}, got {section[key]!r}.", location=where,
                hint=default_hint(param, key),
            ))
    errors.raise_if_any()
    return settings
