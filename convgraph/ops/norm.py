"""Batch normalisation and dropout: training-time layers with the input's volume."""

from __future__ import annotations

import numpy as np

from convgraph.ops import values as v
from convgraph.ops.base import OnnxLayer, OnnxUnsupported, Op, Param, Weight, register
from convgraph.ops.cases import Case


@register
class BatchNorm(Op):
    name = "batchnorm"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "BN", output="8x6x5", params=10, macs=0),
        Case("4x3x3", "BN", grad=True),
        Case("5x7x3", "BN", batch=7),
        Case("4x4x20", "BN", batch=1),
        Case("4x4x20", "BN-RELU", batch=1),  # fused epilogue
        Case("9x7x3", "CONV(12, 3, pad=1, bias=false)-BN-LEAKYRELU(0.2)", batch=7,
             other_profile=True),
    )
    aliases = ("bn", "batch_norm")
    onnx_types = ("BatchNormalization",)
    onnx_notes = "inference form (training_mode 0); momentum m becomes convgraph's 1 - m"

    def from_onnx(self, node):
        if node.attr("training_mode", 0):
            raise OnnxUnsupported("training_mode=1 is not supported")
        names = ("weight", "bias", "running_mean", "running_var")
        weights = {key: node.constant(index + 1, key.replace("_", " "))
                   for index, key in enumerate(names)}
        # ONNX keeps m of the running statistics per step; convgraph (as PyTorch) says how
        # much of the new batch it takes
        attrs = {"eps": float(node.attr("epsilon", 1e-5)),
                 "momentum": round(1.0 - float(node.attr("momentum", 0.9)), 7)}
        return OnnxLayer(attrs, weights)
    summary = "Normalise each depth slice over the batch, then scale and shift (learned)."
    kernels = ("norm", "reduction")  # reduction: SUM_SPLITS of the gradients
    takes_epilogue = True
    affine_in_inference = True  # the running statistics: folded into a conv or fc before it
    colour = "#e0cffc"
    params = {
        "eps": Param(
            v.number(0.0, 1.0, exclusive_min=True), default=1e-5, doc="added to the variance"
        ),
        "momentum": Param(
            v.number(0.0, 1.0), default=0.1, doc="weight of the new batch in the running statistics"
        ),
    }

    def infer(self, node):
        return node.input_volumes[0], {}

    def weights(self, node):
        depth = node.output.depth
        return {"weight": Weight((depth,), "ones"), "bias": Weight((depth,), "zeros"),
                "running_mean": Weight((depth,), "zeros", trainable=False),
                "running_var": Weight((depth,), "ones", trainable=False)}

    def flops(self, node):
        return 2 * node.output.elements  # inference: one scale, one shift

    def lower(self, ctx) -> None:
        activation, slope = ctx.epilogue()
        args = [ctx.input_tensor()]
        args += [ctx.param(key) for key in ("weight", "bias", "running_mean", "running_var")]
        ctx.pixel_launch(
            "norm",
            "BATCHNORM_INFERENCE",
            {"X": ctx.input_layout(), "Y": ctx.output_layout},
            args + [ctx.output_tensor],
            {"EPSILON": ctx.attrs["eps"], "EPILOGUE": activation, "EPILOGUE_SLOPE": slope},
            ctx.node.flops,
            shapes_at_run_time=True,
        )

    def device_params(self, node, params, input_layout, output_layout):
        # padding channels get gamma 0, variance 1: they come out as 0, never NaN
        out = {}
        for key, fill in (
            ("weight", 0.0),
            ("bias", 0.0),
            ("running_mean", 0.0),
            ("running_var", 1.0),
        ):
            padded = np.full(output_layout.stride_c, fill, np.float32)
            padded[: output_layout.volume.depth] = params[key]
            out[key] = padded
        return out

    def device_param_elements(self, node, input_layout, output_layout):
        return dict.fromkeys(("weight", "bias", "running_mean", "running_var"),
                             output_layout.stride_c)

    def reference(self, node, inputs, params):
        def channel(key):
            return np.asarray(params[key], np.float64)[None, :, None, None]

        x = np.asarray(inputs[0], np.float64)
        scale = channel("weight") / np.sqrt(channel("running_var") + node.attrs["eps"])
        return (x - channel("running_mean")) * scale + channel("bias")

    def inference_affine(self, node, params):
        """gamma / sqrt(var + eps) and beta - mean * that, float64 (what ``reference`` does)."""
        scale = (np.asarray(params["weight"], np.float64)
                 / np.sqrt(np.asarray(params["running_var"], np.float64) + node.attrs["eps"]))
        return scale, np.asarray(params["bias"], np.float64) - np.asarray(
            params["running_mean"], np.float64) * scale

    def onnx_export(self, node, onnx):  # inference: the running statistics
        params = [onnx.param(key) for key in ("weight", "bias", "running_mean", "running_var")]
        onnx.add("BatchNormalization", onnx.inputs + params, output=onnx.output,
                 epsilon=float(node.attrs["eps"]))

    def _epilogue_defines(self, ctx) -> dict:
        activation, slope = ctx.epilogue()
        return {"EPILOGUE": activation, "EPILOGUE_SLOPE": slope}

    def lower_train(self, ctx) -> None:
        # each kernel gets only the defines it reads: the shapes arrive at run time, so
        # kernels of the same defines are one compiled kernel for every layer
        x, y = ctx.input_layout(), ctx.output_layout
        saved = ctx.saved()
        partial, images = ctx.split_scratch("stats", 2 * x.stride_c)
        ctx.channel_split_launch(
            "norm", "BATCHNORM_SPLIT_STATS", {"X": x, "Y": y},
            [ctx.input_tensor(), partial, ctx.BATCH], images, shapes_at_run_time=True)
        ctx.channel_launch(
            "norm", "BATCHNORM_STATS", {"X": x, "Y": y},
            [partial, saved, ctx.param("running_mean"), ctx.param("running_var"), ctx.BATCH],
            {"EPSILON": ctx.attrs["eps"], "MOMENTUM": ctx.attrs["momentum"],
             "IMAGES_PER_SPLIT": images}, shapes_at_run_time=True)
        ctx.pixel_launch(
            "norm",
            "BATCHNORM_TRAIN",
            {"X": x, "Y": y},
            [ctx.input_tensor(), ctx.param("weight"), ctx.param("bias"), saved,
             ctx.output_tensor],
            self._epilogue_defines(ctx),
            ctx.node.flops,
            shapes_at_run_time=True,
        )

    def lower_backward(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        saved = ctx.saved()  # the batch statistics lower_train saved
        # the kernel lays each split's partial sums X_STRIDE_C apart
        assert ctx.param_elements("weight") == x.stride_c, "batchnorm parameters as stored"
        dgamma, images = ctx.split_sum("weight")
        dbeta, _ = ctx.split_sum("bias", images)
        ctx.channel_split_launch(
            "norm", "BATCHNORM_BACKWARD_REDUCE", {"X": x, "Y": y},
            [ctx.input_tensor(), ctx.output_grad, saved, dgamma, dbeta, ctx.BATCH], images,
            shapes_at_run_time=True)
        ctx.sum_splits("weight")
        ctx.sum_splits("bias")
        if ctx.needs_grad():
            grad, accumulate = ctx.input_grad()
            ctx.pixel_launch(
                "norm",
                "BATCHNORM_BACKWARD_DATA",
                {"X": x, "Y": y},
                [ctx.input_tensor(), ctx.output_grad, ctx.param("weight"), saved,
                 ctx.param_grad("weight"), ctx.param_grad("bias"), grad, ctx.BATCH],
                {"ACCUMULATE": accumulate},
                shapes_at_run_time=True,
            )

    def host_params(self, node, device, input_layout, output_layout):
        depth = output_layout.volume.depth
        return {key: np.asarray(value)[:depth].copy() for key, value in device.items()}

    def reference_train(self, node, inputs, params, seed):
        x = np.asarray(inputs[0], np.float64)
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = x.var(axis=(0, 2, 3), keepdims=True)
        xhat = (x - mean) / np.sqrt(var + node.attrs["eps"])
        gamma = np.asarray(params["weight"], np.float64)[None, :, None, None]
        beta = np.asarray(params["bias"], np.float64)[None, :, None, None]
        return xhat * gamma + beta

    def reference_running_stats(self, node, inputs, params):
        """The running statistics after one training-mode pass (PyTorch's update)."""
        x = np.asarray(inputs[0], np.float64)
        count = x.shape[0] * x.shape[2] * x.shape[3]
        momentum = node.attrs["momentum"]
        unbiased = x.var(axis=(0, 2, 3)) * (count / max(count - 1, 1))
        return {"running_mean": (1 - momentum) * params["running_mean"]
                + momentum * x.mean(axis=(0, 2, 3)),
                "running_var": (1 - momentum) * params["running_var"] + momentum * unbiased}

    def reference_backward(self, node, inputs, output, grad, params, seed):
        x = np.asarray(inputs[0], np.float64)
        count = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        inverse = 1.0 / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + node.attrs["eps"])
        xhat = (x - mean) * inverse
        gamma = np.asarray(params["weight"], np.float64)[None, :, None, None]
        d_beta = grad.sum(axis=(0, 2, 3))
        d_gamma = (grad * xhat).sum(axis=(0, 2, 3))
        dx = gamma * inverse / count * (count * grad - d_beta[None, :, None, None]
                                        - xhat * d_gamma[None, :, None, None])
        return [dx], {"weight": d_gamma, "bias": d_beta}


@register
class Dropout(Op):
    name = "dropout"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "DROPOUT(0.3)", output="8x6x5", params=0, macs=0),
        Case("4x3x3", "DROPOUT(0.4)", grad=True),
        Case("6x6x3", "DROPOUT", batch=1),  # the network is its input
        # relu reads the conv's tensor
        Case("8x8x3", "CONV(4, 3, pad=1)-DROPOUT(0.3)-RELU", batch=7),
        Case("7x7x3", {  # dropout feeding two readers: both read the conv's tensor
            "conv": {"op": "conv", "filters": 6, "size": 3, "pad": 1, "inputs": ["input"]},
            "drop": {"op": "dropout", "rate": 0.3},
            "relu": {"op": "relu", "inputs": ["drop"]},
            "add": {"op": "add", "inputs": ["relu", "drop"]},
        }, batch=1, label="branch"),
    )
    summary = "Zero values with probability rate in training (scaling the rest); identity after."
    positional = ("rate",)
    inference_identity = True
    onnx_types = ("Dropout",)
    onnx_notes = "ratio kept as the rate (attribute, or a constant input from opset 12)"

    def from_onnx(self, node):
        rate = node.attr("ratio", 0.5)
        if node.has_input(1):
            rate = node.constant(1, "ratio").item()
        if len(node.output_shapes) > 1 and node.output_shapes[1] is not None:
            raise OnnxUnsupported("its mask output is not supported")
        return OnnxLayer({"rate": float(rate)})
    kernels = ("elementwise",)
    params = {
        "rate": Param(
            v.number(0.0, 1.0, exclusive_max=True),
            default=0.5,
            doc="probability of dropping a value",
        )
    }

    def infer(self, node):
        return node.input_volumes[0], {}

    def flops(self, node):
        return 0

    def reference(self, node, inputs, params):
        return np.asarray(inputs[0], np.float64)  # inference

    def _launch(self, ctx, selector: str, source, target, read, written, accumulate: int):
        """DROPOUT_FORWARD or _BACKWARD: ``source`` (layout ``read``) masked into ``target``."""
        volume = read.volume
        # a salt per node, so that two dropouts never drop the same positions
        salt = ctx.node.order * 7919
        ctx.launch("elementwise", selector,
                   {"HEIGHT": volume.height, "WIDTH": volume.width, "CHANNELS": volume.depth,
                    "RATE": float(ctx.attrs["rate"]), "SALT": int(salt),
                    "ACCUMULATE": accumulate, **read.defines("X"), **written.defines("Y")},
                   (volume.depth, volume.width, volume.height),
                   [source, target, ctx.SEED, ctx.SAMPLE_OFFSET],
                   batch_axis=2, local_size=ctx.profile.pixel_local)

    def lower_eval(self, ctx) -> None:  # training plans keep dropout's own tensor: copy it
        ctx.pixel_launch(
            "elementwise",
            "GRADIENT_COPY",
            {"X": ctx.input_layout(), "Y": ctx.output_layout},
            [ctx.input_tensor(), ctx.output_tensor],
            {"ACCUMULATE": 0},
            shapes_at_run_time=True,
        )

    def lower_train(self, ctx) -> None:
        self._launch(ctx, "DROPOUT_FORWARD", ctx.input_tensor(), ctx.output_tensor,
                     ctx.input_layout(), ctx.output_layout, 0)

    def lower_backward(self, ctx) -> None:
        grad, accumulate = ctx.input_grad()  # reads dL/dy, writes dL/dx
        self._launch(ctx, "DROPOUT_BACKWARD", ctx.output_grad, grad, ctx.output_layout,
                     ctx.input_layout(), accumulate)

    def mask(self, node, shape, seed: int, sample_offset: int = 0):
        """The kernels' keep/scale factor for every value of an (N, D, H, W) batch whose first
        image is image ``sample_offset`` of the global batch (a data-parallel shard's)."""
        n, d, h, w = shape
        first = sample_offset * h * w * d
        index = np.arange(first, first + n * h * w * d, dtype=np.uint64).reshape(n, h, w, d)
        salt = node.order * 7919
        uniform = uniform_hash((seed + int(salt)) % 2**32, index).transpose(0, 3, 1, 2)
        rate = node.attrs["rate"]
        return np.where(uniform >= np.float32(rate), 1.0 / (1.0 - np.float32(rate)), 0.0)

    def reference_train(self, node, inputs, params, seed):
        x = np.asarray(inputs[0], np.float64)
        return x * self.mask(node, x.shape, seed)

    def reference_backward(self, node, inputs, output, grad, params, seed):
        return [grad * self.mask(node, grad.shape, seed)], {}


def uniform_hash(seed: int, index: np.ndarray) -> np.ndarray:
    """common.cl's uniform_hash in numpy: the same 32-bit arithmetic, so masks match exactly."""
    mask = np.uint64(0xFFFFFFFF)
    h = ((index * np.uint64(0x9E3779B9)) & mask) ^ np.uint64(seed)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x7FEB352D)) & mask
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x846CA68B)) & mask
    h ^= h >> np.uint64(16)
    return (h >> np.uint64(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)
