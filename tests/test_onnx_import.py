"""ONNX import (convgraph/onnx/importer.py): models built with onnx.helper, imported, compiled
and run on the OpenCL device against onnxruntime; bad files and unsupported nodes refused with
one clear paragraph and exit status 2, through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, numpy_helper  # noqa: E402
from onnx import helper as h  # noqa: E402

import convgraph  # noqa: E402
from convgraph.onnx.importer import OnnxImportError, import_onnx  # noqa: E402

RNG = np.random.default_rng(14)


def tensor(name: str, *shape, positive: bool = False):
    values = RNG.standard_normal(shape).astype(np.float32)
    return numpy_helper.from_array(np.abs(values) + 0.5 if positive else values, name)


def ints(name: str, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def save(tmp_path, nodes, initializers, input_shape, output_shape, opset=17, name="net",
         batch="N"):
    """Write a model reading x (batch, C, H, W) and making y; returns its path."""
    graph = h.make_graph(
        nodes, name, [h.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *input_shape])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [batch, *output_shape])],
        initializers)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 7  # what onnxruntime reads for every opset tested
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def bn_inputs(prefix: str, depth: int) -> list:
    return [tensor(f"{prefix}_s", depth, positive=True), tensor(f"{prefix}_b", depth),
            tensor(f"{prefix}_m", depth), tensor(f"{prefix}_v", depth, positive=True)]


def bn_node(prefix: str, source: str, out: str, **attrs):
    return h.make_node("BatchNormalization", [source] + [f"{prefix}_{k}" for k in "sbmv"],
                       [out], name=prefix, **attrs)


def assert_runs_like_onnxruntime(path, cl_device, batch: int = 2):
    """Import ``path``, run it on the device and compare with onnxruntime to 1e-4 relative."""
    imported = import_onnx(path)
    model = convgraph.compile(imported.spec, device=cl_device, batch=batch)
    model.set_params(imported.weights)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    x = RNG.standard_normal([batch, *shape[1:]]).astype(np.float32)
    want = session.run(None, {"x": x})[0]
    got = model.forward(x).reshape(want.shape)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    return imported


# --------------------------------------------------------------------- one model per op

def conv_model(**attrs):
    def build(tmp_path, opset):
        nodes = [h.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", **attrs)]
        groups = attrs.get("group", 1)
        inits = [tensor("w", 6, 6 // groups, *attrs.get("kernel_shape", (3, 3))), tensor("b", 6)]
        return save(tmp_path, nodes, inits, (6, 11, 9), ("?", "?", "?"), opset)
    return build


def unary_model(op_type: str, **attrs):
    def build(tmp_path, opset):
        nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                 h.make_node(op_type, ["c"], ["y"], name="act", **attrs)]
        return save(tmp_path, nodes, [tensor("w", 5, 3, 3, 3)], (3, 7, 6), (5, 7, 6), opset)
    return build


def pool_model(op_type: str, **attrs):
    def build(tmp_path, opset):
        nodes = [h.make_node(op_type, ["x"], ["y"], name="pool", **attrs)]
        return save(tmp_path, nodes, [], (4, 10, 9), ("?", "?", "?"), opset)
    return build


def batchnorm_model(tmp_path, opset):
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             bn_node("bn", "c", "y", epsilon=1e-3, momentum=0.8)]
    return save(tmp_path, nodes, [tensor("w", 5, 3, 3, 3), *bn_inputs("bn", 5)], (3, 8, 7),
                (5, 6, 5), opset)


def merge_model(op_type: str, branches: int):
    def build(tmp_path, opset):
        nodes = [h.make_node("Conv", ["x", f"w{i}"], [f"c{i}"], name=f"conv{i}",
                             pads=[i, i, i, i], kernel_shape=[2 * i + 1] * 2)
                 for i in range(branches)]
        attrs = {"axis": 1} if op_type == "Concat" else {}
        nodes.append(h.make_node(op_type, [f"c{i}" for i in range(branches)], ["y"], name="join",
                                 **attrs))
        inits = [tensor(f"w{i}", 4, 3, 2 * i + 1, 2 * i + 1) for i in range(branches)]
        return save(tmp_path, nodes, inits, (3, 7, 9), ("?", 7, 9), opset)
    return build


def classifier_model(head: str):
    """conv -> GAP or a volume -> the flattening pattern ``head`` -> Gemm or MatMul+Add."""
    def build(tmp_path, opset):
        nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="conv")]
        inits = [tensor("w", 6, 3, 3, 3)]
        if head == "flatten-gemm":  # a 3x3x6 volume flattened, as VGG's classifier reads it
            nodes += [h.make_node("Flatten", ["c"], ["f"], name="flatten", axis=1),
                      h.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1,
                                  alpha=0.5, beta=2.0)]
            inits += [tensor("fw", 4, 54), tensor("fb", 4)]
        elif head == "reshape-matmul-add":
            nodes += [h.make_node("Reshape", ["c", "shape"], ["f"], name="reshape"),
                      h.make_node("MatMul", ["f", "fw"], ["mm"], name="fc"),
                      h.make_node("Add", ["mm", "fb"], ["y"], name="fc_bias")]
            inits += [ints("shape", [-1, 54]), tensor("fw", 54, 4), tensor("fb", 4)]
        elif head == "shape-reshape-gemm":  # x.view(x.size(0), -1), as torch.onnx exports it
            nodes += [h.make_node("Shape", ["c"], ["s"], name="shape"),
                      h.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
                      h.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze")
                      if opset >= 13 else
                      h.make_node("Unsqueeze", ["n"], ["n1"], name="unsqueeze", axes=[0]),
                      h.make_node("Concat", ["n1", "minus1"], ["target"], name="target", axis=0),
                      h.make_node("Reshape", ["c", "target"], ["f"], name="view"),
                      h.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
            inits += [ints("zero", 0), ints("axes", [0]), ints("minus1", [-1]),
                      tensor("fw", 4, 54), tensor("fb", 4)]
        else:  # "gap-squeeze-gemm-softmax"
            axes = [h.make_node("Squeeze", ["g"], ["f"], name="squeeze", axes=[2, 3])] \
                if opset < 13 else [h.make_node("Squeeze", ["g", "axes"], ["f"], name="squeeze")]
            nodes += [h.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"), *axes,
                      h.make_node("Dropout", ["f"], ["d"], name="drop"),
                      h.make_node("Identity", ["d"], ["i"], name="same"),
                      h.make_node("Gemm", ["i", "fw"], ["z"], name="fc"),
                      h.make_node("Softmax", ["z"], ["y"], name="softmax", axis=1)]
            inits += [tensor("fw", 6, 4), ints("axes", [2, 3])]
        return save(tmp_path, nodes, inits, (3, 5, 5), (4,), opset)
    return build


def pad_model(reader: str):
    """A zero Pad (as TensorFlow exporters emit for 'same') folded into the next conv or pool."""
    def build(tmp_path, opset):
        reading = (h.make_node("Conv", ["p", "w"], ["y"], name="conv", strides=[2, 2])
                   if reader == "conv" else
                   h.make_node("AveragePool", ["p"], ["y"], name="pool", kernel_shape=[3, 3]))
        nodes = [h.make_node("Pad", ["x", "pads"], ["p"], name="pad"), reading]
        # a conv takes padding beyond its symmetric pad as a ceil rounding; an average, whose
        # output would then divide by other counts, the symmetric kind
        pads = [0, 0, 0, 1, 0, 0, 1, 2] if reader == "conv" else [0, 0, 1, 1, 0, 0, 1, 1]
        inits = [ints("pads", pads), tensor("w", 4, 3, 3, 3)]
        return save(tmp_path, nodes, inits, (3, 9, 8), ("?", "?", "?"), opset)
    return build


def conv_add_bias_model(tmp_path, opset):
    """A bias-less Conv and an Add of a (1, C, 1, 1) constant, as Keras exporters write it."""
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             h.make_node("Add", ["c", "b"], ["y"], name="bias")]
    return save(tmp_path, nodes, [tensor("w", 4, 3, 3, 3), tensor("b", 1, 4, 1, 1)], (3, 6, 5),
                (4, 6, 5), opset)


def constant_model(tmp_path, opset):
    weight = h.make_node("Constant", [], ["w"], name="weight",
                         value=tensor("w_value", 4, 3, 1, 1))
    nodes = [weight, h.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    return save(tmp_path, nodes, [], (3, 5, 4), (4, 5, 4), opset)


OP_MODELS = {
    "conv-asymmetric-pads": conv_model(pads=[1, 0, 2, 1], strides=[2, 2], kernel_shape=[3, 2]),
    "conv-groups-dilation": conv_model(group=2, dilations=[2, 1], pads=[2, 1, 2, 1]),
    "conv-depthwise": conv_model(group=6, pads=[1, 1, 1, 1]),
    "conv-same-upper": conv_model(auto_pad="SAME_UPPER", strides=[2, 2], kernel_shape=[4, 4]),
    "conv-same-lower": conv_model(auto_pad="SAME_LOWER", kernel_shape=[3, 3]),
    "batchnorm": batchnorm_model,
    "relu": unary_model("Relu"),
    "leakyrelu": unary_model("LeakyRelu", alpha=0.2),
    "sigmoid": unary_model("Sigmoid"),
    "tanh": unary_model("Tanh"),
    "add": merge_model("Add", 2),
    "sum": merge_model("Sum", 3),
    "concat": merge_model("Concat", 3),
    "maxpool-pads-ceil": pool_model("MaxPool", kernel_shape=[3, 3], strides=[2, 2],
                                    pads=[1, 1, 1, 1], ceil_mode=1),
    "maxpool-asymmetric": pool_model("MaxPool", kernel_shape=[2, 2], strides=[2, 2],
                                     pads=[0, 0, 1, 1]),
    "avgpool-count-pad": pool_model("AveragePool", kernel_shape=[3, 3], strides=[2, 2],
                                    pads=[1, 1, 1, 1], count_include_pad=1),
    "avgpool-ceil": pool_model("AveragePool", kernel_shape=[3, 3], strides=[2, 2],
                               ceil_mode=1),
    "globalaveragepool": pool_model("GlobalAveragePool"),
    "flatten-gemm": classifier_model("flatten-gemm"),
    "reshape-matmul-add": classifier_model("reshape-matmul-add"),
    "shape-gather-concat-reshape-gemm": classifier_model("shape-reshape-gemm"),
    "gap-squeeze-dropout-identity-gemm-softmax": classifier_model("gap-squeeze-gemm-softmax"),
    "pad-into-conv": pad_model("conv"),
    "pad-into-avgpool": pad_model("avgpool"),
    "constant": constant_model,
    "conv-add-bias": conv_add_bias_model,
}


@pytest.mark.parametrize("case", OP_MODELS)
def test_each_covered_op_runs_like_onnxruntime(case, tmp_path, cl_device):
    path = OP_MODELS[case](tmp_path, 17)
    assert_runs_like_onnxruntime(path, cl_device)


@pytest.mark.parametrize("opset", [11, 12, 13, 18, 21, 25])
def test_every_opset_from_11(opset, tmp_path, cl_device):
    """Opset changes the exporters hit: Squeeze's axes and Pad's pads move to inputs, and
    Softmax's axis means something else before 13."""
    for build in (classifier_model("gap-squeeze-gemm-softmax"), pad_model("conv"),
                  classifier_model("shape-reshape-gemm")):
        assert_runs_like_onnxruntime(build(tmp_path, opset), cl_device)


def test_the_newest_opset_onnx_knows_imports(tmp_path):
    """onnxruntime may lag behind onnx: the import itself is checked at onnx's newest opset."""
    newest = onnx.defs.onnx_opset_version()
    imported = import_onnx(classifier_model("gap-squeeze-gemm-softmax")(tmp_path, newest))
    assert [node["op"] for node in imported.spec["nodes"].values()][-1] == "softmax"


def test_names_weights_and_a_fixed_batch_are_kept(tmp_path):
    path = save(tmp_path, [h.make_node("Conv", ["x", "w", "b"], ["c"], name="/stem/conv.0"),
                           bn_node("bn", "c", "r"),
                           h.make_node("Relu", ["r"], ["y"], name="")],
                [tensor("w", 4, 3, 3, 3), tensor("b", 4), *bn_inputs("bn", 4)],
                (3, 6, 5), (4, 4, 3), batch=8)
    imported = convgraph.import_onnx(path)  # the API's name for it
    assert list(imported.spec["nodes"]) == ["stem_conv_0", "bn", "relu1"]
    assert imported.spec["input"] == "5x6x3"
    assert imported.spec["nodes"]["bn"]["inputs"] == ["stem_conv_0"]
    assert sorted(imported.weights) == ["bn.bias", "bn.running_mean", "bn.running_var",
                                        "bn.weight", "stem_conv_0.bias", "stem_conv_0.weight"]
    bn_scale = numpy_helper.to_array(onnx.load(path).graph.initializer[2])
    np.testing.assert_array_equal(imported.weights["bn.weight"], bn_scale)


# -------------------------------------------------------------- whole networks, end to end

def resnet_like(tmp_path):
    """conv-bn-relu, maxpool, two basic blocks (the second with a strided projection), GAP,
    Flatten, Gemm: the shape torchvision's ResNets export."""
    nodes = [h.make_node("Conv", ["x", "w0"], ["c0"], name="/conv1/Conv", pads=[3, 3, 3, 3],
                         strides=[2, 2], kernel_shape=[7, 7]),
             bn_node("bn0", "c0", "b0"), h.make_node("Relu", ["b0"], ["r0"], name="/relu/Relu"),
             h.make_node("MaxPool", ["r0"], ["p0"], name="/maxpool/MaxPool", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1])]
    inits = [tensor("w0", 8, 3, 7, 7), *bn_inputs("bn0", 8)]
    source, depth = "p0", 8
    for block, (filters, stride) in enumerate([(8, 1), (16, 2)], start=1):
        p = f"l{block}"
        nodes += [h.make_node("Conv", [source, f"{p}w1"], [f"{p}c1"], name=f"/{p}/conv1/Conv",
                              pads=[1, 1, 1, 1], strides=[stride, stride]),
                  bn_node(f"{p}bn1", f"{p}c1", f"{p}b1"),
                  h.make_node("Relu", [f"{p}b1"], [f"{p}r1"], name=f"/{p}/relu/Relu"),
                  h.make_node("Conv", [f"{p}r1", f"{p}w2"], [f"{p}c2"], name=f"/{p}/conv2/Conv",
                              pads=[1, 1, 1, 1]),
                  bn_node(f"{p}bn2", f"{p}c2", f"{p}b2")]
        inits += [tensor(f"{p}w1", filters, depth, 3, 3), *bn_inputs(f"{p}bn1", filters),
                  tensor(f"{p}w2", filters, filters, 3, 3), *bn_inputs(f"{p}bn2", filters)]
        shortcut = source
        if stride != 1 or filters != depth:
            nodes += [h.make_node("Conv", [source, f"{p}wd"], [f"{p}cd"],
                                  name=f"/{p}/downsample/Conv", strides=[stride, stride]),
                      bn_node(f"{p}bnd", f"{p}cd", f"{p}bd")]
            inits += [tensor(f"{p}wd", filters, depth, 1, 1), *bn_inputs(f"{p}bnd", filters)]
            shortcut = f"{p}bd"
        nodes += [h.make_node("Add", [f"{p}b2", shortcut], [f"{p}a"], name=f"/{p}/Add"),
                  h.make_node("Relu", [f"{p}a"], [f"{p}out"], name=f"/{p}/relu_1/Relu")]
        source, depth = f"{p}out", filters
    nodes += [h.make_node("GlobalAveragePool", [source], ["g"], name="/avgpool/GlobalAveragePool"),
              h.make_node("Flatten", ["g"], ["f"], name="/Flatten", axis=1),
              h.make_node("Gemm", ["f", "fcw", "fcb"], ["y"], name="/fc/Gemm", transB=1)]
    inits += [tensor("fcw", 10, depth), tensor("fcb", 10)]
    return save(tmp_path, nodes, inits, (3, 32, 32), (10,), name="resnet_like")


def vgg_like(tmp_path):
    """[conv-relu]*2-maxpool twice, then Flatten and Gemm-Relu-Dropout-Gemm-Softmax."""
    nodes, inits, source, depth = [], [], "x", 3
    for stage, filters in enumerate([8, 16], start=1):
        for layer in (1, 2):
            p = f"s{stage}c{layer}"
            nodes += [h.make_node("Conv", [source, f"{p}w", f"{p}b"], [f"{p}c"],
                                  name=f"features.{p}", pads=[1, 1, 1, 1]),
                      h.make_node("Relu", [f"{p}c"], [f"{p}r"], name=f"features.{p}.relu")]
            inits += [tensor(f"{p}w", filters, depth, 3, 3), tensor(f"{p}b", filters)]
            source, depth = f"{p}r", filters
        nodes.append(h.make_node("MaxPool", [source], [f"pool{stage}"], name=f"pool{stage}",
                                 kernel_shape=[2, 2], strides=[2, 2]))
        source = f"pool{stage}"
    nodes += [h.make_node("Flatten", [source], ["f"], name="flatten"),
              h.make_node("Gemm", ["f", "f1w", "f1b"], ["h1"], name="classifier.0", transB=1),
              h.make_node("Relu", ["h1"], ["h1r"], name="classifier.1"),
              h.make_node("Dropout", ["h1r"], ["h1d"], name="classifier.2"),
              h.make_node("Gemm", ["h1d", "f2w", "f2b"], ["z"], name="classifier.3", transB=1),
              h.make_node("Softmax", ["z"], ["y"], name="softmax", axis=1)]
    inits += [tensor("f1w", 32, 16 * 4 * 4), tensor("f1b", 32), tensor("f2w", 10, 32),
              tensor("f2b", 10)]
    return save(tmp_path, nodes, inits, (3, 16, 16), (10,), name="vgg_like")


@pytest.mark.parametrize("network", [resnet_like, vgg_like])
def test_whole_networks_import_end_to_end(network, tmp_path, cl_device):
    imported = assert_runs_like_onnxruntime(network(tmp_path), cl_device, batch=3)
    ops = [node["op"] for node in imported.spec["nodes"].values()]
    assert ops.count("conv") == (6 if network is resnet_like else 4)


def test_initializers_listed_as_graph_inputs_are_weights(tmp_path, cl_device):
    """Older exporters (keep_initializers_as_inputs) list every weight as a graph input too."""
    path = vgg_like(tmp_path)
    model = onnx.load(path)
    model.graph.input.extend(
        h.make_tensor_value_info(t.name, t.data_type, t.dims) for t in model.graph.initializer)
    onnx.save(model, path)
    imported = assert_runs_like_onnxruntime(path, cl_device)
    assert imported.spec["input"] == "16x16x3"


def program(*args, cwd=None, env=None):
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env=None if env is None else {**os.environ, **env})
    assert "Traceback" not in done.stderr
    return done


def test_import_command_writes_a_spec_and_weights_that_run(tmp_path, cl_device):
    path = resnet_like(tmp_path)
    spec, weights = tmp_path / "net.yaml", tmp_path / "net.npz"
    done = program("import", path, "-o", spec, "--weights", weights)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stderr
    assert spec.read_text().startswith("# imported from resnet_like.onnx (ONNX opset 17) by "
                                       "convgraph import\nname: resnet_like\n")
    imported = import_onnx(path)
    model = convgraph.compile(str(spec), device=cl_device, batch=2)
    model.load_weights(weights)
    x = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
    direct = convgraph.compile(imported.spec, device=cl_device, batch=2)
    direct.set_params(imported.weights)
    np.testing.assert_allclose(model.forward(x), direct.forward(x), rtol=1e-6)
    printed = program("import", path)
    assert printed.returncode == 0 and printed.stdout == spec.read_text()


def test_compile_and_run_take_an_onnx_file(tmp_path):
    path = vgg_like(tmp_path)
    done = program("compile", path, "--no-kernels", "--json")
    assert done.returncode == 0, done.stderr
    assert '"classifier_3"' in done.stdout
    x = tmp_path / "x.npy"
    np.save(x, RNG.standard_normal((2, 3, 16, 16)).astype(np.float32))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    run = program("run", path, "--predict", x, env={"TMPDIR": str(temporary)})
    assert run.returncode == 0, run.stderr
    assert not list(temporary.iterdir())  # the model's weights, written there, are removed
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    best = session.run(None, {"x": np.load(x)})[0].argmax(axis=1)
    rows = [line.split() for line in run.stdout.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert [int(row[1]) for row in rows] == list(best)


# ---------------------------------------------------------------- what is refused, and how

def test_every_unsupported_node_is_reported_at_once(tmp_path):
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             h.make_node("LRN", ["c"], ["l"], name="norm1", size=4),
             h.make_node("Pad", ["c", "pads"], ["p"], name="pad", mode="reflect"),
             h.make_node("MaxPool", ["p"], ["m"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             h.make_node("Conv", ["m", "w2"], ["c2"], name="conv2", dilations=[1, 1]),
             h.make_node("Exp", ["c2"], ["y"], name="exp")]
    inits = [tensor("w", 4, 3, 3, 3), ints("pads", [0, 0, 1, 1, 0, 0, 1, 1]),
             tensor("w2", 4, 4, 1, 1)]
    path = save(tmp_path, nodes, inits, (3, 8, 8), (4, 4, 4), opset=13)
    with pytest.raises(OnnxImportError) as caught:
        import_onnx(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: 3 nodes convgraph cannot import")
    for fragment in ("'norm1' (LRN, opset 13): size 4", "'pad' (Pad, opset 13): mode 'reflect'",
                     "'exp' (Exp, opset 13): no convgraph op reads this op type"):
        assert fragment in message
    done = program("import", path)
    assert done.returncode == 2 and "3 nodes convgraph cannot import" in done.stderr


def test_an_add_of_a_constant_that_is_no_bias_is_refused(tmp_path):
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             h.make_node("Add", ["c", "plane"], ["y"], name="shift")]
    path = save(tmp_path, nodes, [tensor("w", 4, 3, 3, 3), tensor("plane", 1, 1, 6, 6)],
                (3, 8, 8), (4, 6, 6))
    with pytest.raises(OnnxImportError, match=r"'shift' \(Add, opset 17\): it broadcasts"):
        import_onnx(path)


def test_settings_an_op_cannot_express_are_refused(tmp_path):
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             h.make_node("Softmax", ["c"], ["y"], name="softmax", axis=2)]
    path = save(tmp_path, nodes, [tensor("w", 4, 3, 3, 3)], (3, 8, 8), (4, 6, 6), opset=13)
    with pytest.raises(OnnxImportError, match=r"'softmax' \(Softmax, opset 13\): axis 2"):
        import_onnx(path)


def small_valid_model(tmp_path, name="small"):
    return save(tmp_path, [h.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                           h.make_node("Relu", ["c"], ["y"], name="relu")],
                [tensor("w", 4, 3, 3, 3)], (3, 8, 8), (4, 6, 6), name=name)


def rewritten(path, change):
    model = onnx.load(path)
    change(model)
    onnx.save(model, path)
    return path


def cycle(model):
    model.graph.node[0].input[0] = "y"  # conv reads relu's output, relu reads conv's


def dangling(model):
    model.graph.node[1].input[0] = "nowhere"


def wrong_type(model):  # a float64 weight for a float32 conv
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(
        np.zeros((4, 3, 3, 3), np.float64), "w"))


def external_data_missing(path):
    model = onnx.load(path)
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="small.data", size_threshold=0)
    (path.parent / "small.data").unlink()


def truncated(path):
    path.write_bytes(path.read_bytes()[:200])


BAD_FILES = {
    "truncated": (truncated, "not a readable ONNX model"),
    "not-onnx": (lambda path: path.write_text("name: a spec, not a model\n"),
                 "not a readable ONNX model"),
    "cycle": (lambda path: rewritten(path, cycle), "node 'conv' (Conv) lies on a cycle"),
    "dangling-input": (lambda path: rewritten(path, dangling),
                       "node 'relu' (Relu) reads 'nowhere', which no node"),
    "wrong-types": (lambda path: rewritten(path, wrong_type),
                    "node 'conv' (Conv): its input 'w' is float64, where the network computes "
                    "in float32"),
    "external-data-missing": (external_data_missing,
                              "initializer 'w' keeps its data in the external file "
                              "'small.data', which is missing"),
    "missing-file": (lambda path: path.unlink(), "no such ONNX file"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_onnx_files_get_one_clear_paragraph_and_exit_2(case, tmp_path):
    spoil, expected = BAD_FILES[case]
    path = small_valid_model(tmp_path)
    spoil(path)
    for command in (["import", path], ["compile", path, "--no-kernels"]):
        done = program(*command)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"convgraph: error: {path}: ")
        assert expected in done.stderr and "Fix:" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_a_wrong_opset_or_a_second_input_says_why(tmp_path):
    path = small_valid_model(tmp_path)
    rewritten(path, lambda model: model.opset_import[0].__setattr__("version", 10))
    with pytest.raises(OnnxImportError, match="opset 10 .* outside what convgraph imports"):
        import_onnx(path)
    path = small_valid_model(tmp_path, "two")
    rewritten(path, lambda model: model.graph.input.append(
        h.make_tensor_value_info("extra", TensorProto.FLOAT, [1, 3, 8, 8])))
    with pytest.raises(OnnxImportError, match="the graph has 2 inputs"):
        import_onnx(path)


def test_the_readme_coverage_table_is_what_the_ops_declare():
    """Each op's onnx_types have their row in README '### Import', with the op's onnx_notes."""
    from pathlib import Path

    from convgraph.onnx.importer import supported_types

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("\n### Import\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    for onnx_type, op in supported_types().items():
        row = next((line for line in rows if f"`{onnx_type}`" in line.split("|")[1]), None)
        assert row is not None, f"ONNX op {onnx_type} has no row in README '### Import'"
        assert f"`{op.name}`" in row.split("|")[2] and op.onnx_notes in row


@pytest.mark.parametrize("seed", range(100))
def test_a_corrupted_model_is_imported_or_refused_never_a_crash(seed, tmp_path):
    """Bytes of a valid model changed at random: an import or an OnnxImportError, nothing else
    (a traceback on the command line)."""
    path = resnet_like(tmp_path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for position in rng.integers(0, len(data), 1 + seed % 8):
        data[position] = int(rng.integers(0, 256))
    path.write_bytes(bytes(data))
    try:
        import_onnx(path)
    except OnnxImportError as error:
        assert str(error).startswith(f"{path}: ")
