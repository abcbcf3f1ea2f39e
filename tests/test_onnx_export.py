"""ONNX export (convgraph/onnx/export.py, each op's ``onnx_export``): every op case and every spec
in specs/ agrees under onnxruntime with convgraph's own forward (the float64 reference for the
op cases, the device for the specs) to 1e-4 relative, and passes ``onnx.checker``'s full check."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest

import convgraph
from convgraph.errors import SpecErrors, UsageError
from convgraph.graph import ordered
from convgraph.onnx.export import FIRST_OPSET, export_graph, newest_opset, onnx_model
from convgraph.ops.base import REGISTRY, Op
from convgraph.params import expected_shapes
from convgraph.pipeline import analyse
from convgraph.reference import reference_forward

from .conftest import SPECS
from .test_zoo import NETWORKS as ZOO  # exported in tests/test_zoo.py (slow tier), see there

TOLERANCE = 1e-4  # relative to the largest output (ONNX's own backend tests allow 1e-3)
SLOW_SPECS = {"vgg16.yaml", "resnet18.yaml"}  # 40 s and 7 s on this machine's PoCL (CI's time)
MAX_CASE_PARAMS = 2**22  # the shape cases at published sizes (VGG's 25088x4096 fc) are left out


def random_params(graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Every weight drawn at random (biases and batchnorm statistics too, so that each one
    matters); variances kept positive."""
    rng = np.random.default_rng(seed)
    params = {}
    for key, shape in expected_shapes(graph).items():
        value = rng.normal(0.0, 0.5, shape)
        params[key] = np.abs(value) + 0.5 if key.endswith("running_var") else value
    return {key: value.astype(np.float32) for key, value in params.items()}


def input_batch(graph, images: int, seed: int = 1) -> np.ndarray:
    volume = graph.nodes[ordered(graph)[0]]["output"]
    rng = np.random.default_rng(seed)
    return rng.random((images, volume.depth, volume.height, volume.width)).astype(np.float32)


def run_onnx(model, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (name,) = [value.name for value in session.get_inputs()]
    return session.run(None, {name: x})[0]


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """The largest difference over the largest expected value (a 1x1xD volume compared as the
    (N, D) rows the model gives)."""
    expected = np.asarray(expected).reshape(got.shape)
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30))


def _case_params(case) -> int:
    return sum(int(np.prod(shape)) for shape in expected_shapes(analyse(case.spec())).values())


EXPORT_CASES = [pytest.param(case, id=f"{name}-{index}")
                for name, op in REGISTRY.items() for index, case in enumerate(op.cases)
                if _case_params(case) <= MAX_CASE_PARAMS]


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_every_op_case_agrees_with_the_reference(case):
    """Each case every op declares (convgraph/ops/): conv strides, dilations, groups, 'same'
    and ceil/floor rounding, pools with count_pad, joins, fused epilogues..."""
    graph = analyse(case.spec())
    params = random_params(graph)
    x = input_batch(graph, images=3)
    got = run_onnx(onnx_model(graph, params), x)
    expected = reference_forward(graph, params, x.astype(np.float64))
    volume = graph.nodes[graph.graph["output"]]["output"]
    flat = volume.width == volume.height == 1  # (N, D), as Model.forward returns it
    assert got.shape == ((3, volume.depth) if flat else expected.shape)
    assert relative_error(got, expected) <= TOLERANCE


def test_every_registered_op_is_exportable():
    """Each op in the registry has an ONNX mapping, so a new op must declare one."""
    missing = [name for name, op in REGISTRY.items()
               if type(op).onnx_export is Op.onnx_export and not op.inference_identity]
    assert not missing, f"ops without onnx_export: {missing}"


@pytest.mark.device
@pytest.mark.parametrize("spec", [
    pytest.param(path, id=path.stem,
                 marks=[pytest.mark.slow] if path.name in SLOW_SPECS else [])
    for path in sorted(SPECS.glob("*.yaml")) if path.stem not in ZOO])
def test_every_spec_agrees_with_the_device_forward(spec, cl_device, tmp_path):
    """The exported file (input normalisation first) against Model.forward on the device."""
    model = convgraph.compile(spec, device=cl_device, batch=2)
    model.set_params(random_params(model.graph))
    depth = model.graph.nodes[ordered(model.graph)[0]]["output"].depth
    model.normalization = (np.linspace(0.3, 0.6, depth, dtype=np.float32),
                           np.linspace(0.2, 0.4, depth, dtype=np.float32))
    path = convgraph.export_onnx(model, tmp_path / "model.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    x = input_batch(model.graph, images=2)
    got = run_onnx(onnx.load(str(path)), x)
    assert relative_error(got, model.forward(x)) <= TOLERANCE


@pytest.mark.parametrize("opset", range(FIRST_OPSET, newest_opset() + 1))
def test_every_opset_runs(opset):
    graph = analyse(SPECS / "resnet8.yaml")
    params = random_params(graph)
    model = onnx_model(graph, params, opset)
    assert model.opset_import[0].version == opset
    x = input_batch(graph, images=2)
    assert relative_error(run_onnx(model, x), reference_forward(graph, params, x)) <= TOLERANCE


@pytest.mark.parametrize("opset", [FIRST_OPSET - 1, newest_opset() + 1, True, "17"])
def test_an_opset_out_of_range_is_refused(opset):
    graph = analyse(SPECS / "lenet5.yaml")
    with pytest.raises(UsageError, match=f"give an opset from {FIRST_OPSET} to"):
        onnx_model(graph, random_params(graph), opset)


def test_every_node_that_cannot_be_exported_is_reported_together(monkeypatch):
    for name in ("tanh", "sigmoid"):  # as an op without an ONNX mapping is
        monkeypatch.setattr(type(REGISTRY[name]), "onnx_op", None)
    graph = analyse({"name": "two", "input": "8x8x1",
                     "pattern": "[INPUT-CONV(4, 3)-TANH-CONV(2, 3)-SIGMOID]"})
    with pytest.raises(SpecErrors) as raised:
        onnx_model(graph, random_params(graph))
    error = raised.value
    assert error.exit_status == 2 and len(error.errors) == 2
    assert "op 'tanh' has no ONNX mapping" in str(error)
    assert "op 'sigmoid' has no ONNX mapping" in str(error)


def test_the_normalisation_is_first_and_can_be_left_out(tmp_path):
    graph = analyse(SPECS / "lenet5.yaml")
    params = random_params(graph)
    mean, std = np.array([0.25], np.float32), np.array([0.5], np.float32)
    x = input_batch(graph, images=2)
    with_it = onnx_model(graph, params, normalization=(mean, std))
    assert [node.op_type for node in with_it.graph.node[:2]] == ["Sub", "Div"]
    expected = reference_forward(graph, params, (x - 0.25) / 0.5)
    assert relative_error(run_onnx(with_it, x), expected) <= TOLERANCE
    without = onnx_model(graph, params)
    assert "Sub" not in [node.op_type for node in without.graph.node]


def test_parameters_that_do_not_fit_are_refused(tmp_path):
    graph = analyse(SPECS / "lenet5.yaml")
    params = random_params(graph)
    params.pop(next(iter(params)))
    with pytest.raises(convgraph.DataError, match="missing"):
        export_graph(graph, params, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_a_non_classifier_output_stays_a_volume():
    graph = analyse({"name": "maps", "input": "9x7x3", "pattern": "[INPUT-CONV(4, 3)]"})
    params = random_params(graph)
    model = onnx_model(graph, params)
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 4, 5, 7]


# --- the command line, as a process ---

def convgraph_cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convgraph.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def lenet_weights(tmp_path):
    graph = analyse(SPECS / "lenet5.yaml")
    params = random_params(graph)
    path = tmp_path / "lenet5.npz"
    np.savez(path, **params)
    return graph, params, path


def test_export_writes_a_checked_model_that_agrees(tmp_path, lenet_weights):
    graph, params, weights = lenet_weights
    done = convgraph_cli("export", SPECS / "lenet5.yaml", "--weights", weights, "-o",
                         tmp_path / "out" / "lenet5.onnx", "--opset", 18, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "lenet5.onnx" in done.stdout and "opset 18" in done.stdout
    model = onnx.load(str(tmp_path / "out" / "lenet5.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18
    x = input_batch(graph, images=4)
    assert relative_error(run_onnx(model, x), reference_forward(graph, params, x)) <= TOLERANCE


@pytest.mark.device
def test_export_of_a_compiled_directory_takes_its_weights(tmp_path, lenet_weights, cl_device):
    _, _, weights = lenet_weights  # an artifact with weights holds kernels: built on a device
    # normalize=false: plain arrays record no normalisation, and no data set is at hand
    built = convgraph_cli("compile", SPECS / "lenet5.yaml", "--device", cl_device, "-o",
                          tmp_path / "artifact", "--weights", weights, "--set",
                          "normalize=false", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    done = convgraph_cli("export", tmp_path / "artifact", "-o", tmp_path / "m.onnx",
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)


@pytest.mark.device
def test_trained_weights_export_with_their_normalisation_and_score_as_predict(tmp_path,
                                                                             cl_device):
    """Trained by 'run --save' (weights and normalisation), the exported model scores a batch
    as 'run --predict' does: the normalisation is its first node by default."""
    spec = SPECS / "seed.yaml"
    trained = convgraph_cli("run", spec, "--epochs", 1, "--limit", 128, "--save", "w.npz",
                            "--device", cl_device, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    x = np.random.default_rng(0).random((5, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    predicted = convgraph_cli("run", spec, "--predict", "x.npy", "--weights", "w.npz",
                              "--output", "scores.npy", "--device", cl_device, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    done = convgraph_cli("export", spec, "--weights", "w.npz", "-o", "seed.onnx", cwd=tmp_path)
    assert done.returncode == 0 and "input normalisation first" in done.stdout, done.stderr
    model = onnx.load(str(tmp_path / "seed.onnx"))
    assert [node.op_type for node in model.graph.node[:2]] == ["Sub", "Div"]
    assert relative_error(run_onnx(model, x), np.load(tmp_path / "scores.npy")) <= TOLERANCE
    left_out = convgraph_cli("export", spec, "--weights", "w.npz", "-o", "raw.onnx",
                             "--no-normalize-input", cwd=tmp_path)
    assert left_out.returncode == 0 and "not included" in left_out.stdout
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert "Sub" not in [node.op_type for node in raw.graph.node]


@pytest.mark.parametrize("flags, status, message", [
    ([], 2, "export needs the trained weights"),
    (["--weights", "{weights}", "--opset", "12"], 2, "give an opset from 13"),
    (["--weights", "{weights}", "--normalize-input"], 2, "records no input normalisation"),
    (["--weights", "absent.npz"], 5, "does not exist"),
])
def test_export_refuses_with_a_clear_error(tmp_path, lenet_weights, flags, status, message):
    flags = [flag.format(weights=lenet_weights[2]) for flag in flags]
    done = convgraph_cli("export", SPECS / "lenet5.yaml", "-o", tmp_path / "m.onnx", *flags,
                         cwd=tmp_path)
    assert done.returncode == status
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_export_into_a_file_where_a_folder_belongs_is_exit_7(tmp_path, lenet_weights):
    (tmp_path / "file").write_text("")
    done = convgraph_cli("export", SPECS / "lenet5.yaml", "--weights", lenet_weights[2], "-o",
                         tmp_path / "file" / "m.onnx", cwd=tmp_path)
    assert done.returncode == 7 and "Traceback" not in done.stderr


def test_a_wrong_network_for_the_weights_is_exit_5(tmp_path, lenet_weights):
    done = convgraph_cli("export", SPECS / "resnet8.yaml", "--weights", lenet_weights[2], "-o",
                         tmp_path / "m.onnx", cwd=tmp_path)
    assert done.returncode == 5 and "do not fit the model 'resnet8'" in done.stderr


@pytest.mark.parametrize("spec", ["seed", "lenet5", "resnet8", "vgg_cifar", "fashion_convnet_bn"])
def test_export_then_import_gives_the_same_network_and_outputs(spec, tmp_path):
    """The round trip: a spec exported and imported again has the same layers that compute
    (each op with its output volume and parameter count, in the order of ONNX's graph, which may
    visit a residual block's branches in another order; the importer names them after the ONNX
    nodes) and the same outputs on the float64 reference."""
    from convgraph.onnx.importer import import_onnx

    graph = analyse(SPECS / f"{spec}.yaml")
    params = random_params(graph)
    export_graph(graph, params, tmp_path / "m.onnx")
    imported = import_onnx(tmp_path / "m.onnx")
    again = analyse(imported.spec)

    def computing(g):  # fused activations and flattens are how convgraph runs, not the network
        return [(g.nodes[n]["op"], tuple(g.nodes[n]["output"]), g.nodes[n]["params"])
                for n in ordered(g) if g.nodes[n]["op"] not in ("flatten", "dropout")]

    assert sorted(computing(again)) == sorted(computing(graph))
    x = input_batch(graph, images=2)
    assert relative_error(reference_forward(again, imported.weights, x),
                          reference_forward(graph, params, x)) <= 1e-6
