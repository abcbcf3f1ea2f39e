"""Models exported by torch.onnx from PyTorch twins written here (torchvision's blocks in
miniature), imported by convgraph: the forward pass against PyTorch's (1e-4 relative) and one
SGD step against PyTorch's (the weights after it within float32 tolerance). The slow tier:
`python -m pytest -m slow tests/test_onnx_torch.py`; skipped without torch (the CPU build,
`pip install torch==2.13.0`)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
pytest.importorskip("onnx")
nn = torch.nn
F = torch.nn.functional

import convgraph  # noqa: E402
from convgraph.onnx.importer import import_onnx  # noqa: E402

CLASSES = 5
BATCH = 4
LR = 0.1


class Head(nn.Module):
    """Global average pool and a linear classifier: a 1x1xD output, so the loss is
    convgraph's softmax cross-entropy."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, CLASSES)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class VggIsh(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(12 * 4 * 4, 16), nn.ReLU(),
                                        nn.Linear(16, CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block, with the strided 1x1 projection."""

    def __init__(self, inputs: int, filters: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, filters, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters)
        self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(filters)
        self.downsample = None if stride == 1 and inputs == filters else nn.Sequential(
            nn.Conv2d(inputs, filters, 1, stride, bias=False), nn.BatchNorm2d(filters))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetIsh(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 12, 2)
        self.head = Head(12)

    def forward(self, x):
        return self.head(self.layer2(self.layer1(self.stem(x))))


class MobileNetV3Block(nn.Module):
    """Expand (hardswish), depthwise (hardswish), squeeze-and-excitation (relu, hardsigmoid
    gate), project, residual: MobileNetV3's bneck."""

    def __init__(self, channels: int = 8, expanded: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.expand = nn.Sequential(nn.Conv2d(channels, expanded, 1, bias=False),
                                    nn.BatchNorm2d(expanded), nn.Hardswish())
        self.depthwise = nn.Sequential(
            nn.Conv2d(expanded, expanded, 3, padding=1, groups=expanded, bias=False),
            nn.BatchNorm2d(expanded), nn.Hardswish())
        self.se_reduce = nn.Conv2d(expanded, 4, 1)
        self.se_expand = nn.Conv2d(4, expanded, 1)
        self.project = nn.Sequential(nn.Conv2d(expanded, channels, 1, bias=False),
                                     nn.BatchNorm2d(channels))
        self.head = Head(channels)

    def forward(self, x):
        x = self.stem(x)
        y = self.depthwise(self.expand(x))
        gate = F.hardsigmoid(self.se_expand(F.relu(self.se_reduce(F.adaptive_avg_pool2d(y, 1)))))
        return self.head(x + self.project(y * gate))


class LinearSqueezeExcitation(nn.Module):
    """The squeeze-and-excitation written with Linear layers and views, as many hand-written
    blocks are (x.view(b, c), then .view(b, c, 1, 1): Shape, Gather, Unsqueeze, Concat and
    Reshape in the export), and its output divided by a number."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.reduce = nn.Linear(channels, 4)
        self.expand = nn.Linear(4, channels)
        self.head = Head(channels)

    def forward(self, x):
        y = self.conv(x)
        b, c, _, _ = y.shape
        gate = F.adaptive_avg_pool2d(y, 1).view(b, c)
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(gate)))).view(b, c, 1, 1)
        return self.head(y * gate / 2.0)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand, depthwise, both relu6, linear projection, residual."""

    def __init__(self, channels: int = 8, expanded: int = 24):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU6())
        self.block = nn.Sequential(
            nn.Conv2d(channels, expanded, 1, bias=False), nn.BatchNorm2d(expanded), nn.ReLU6(),
            nn.Conv2d(expanded, expanded, 3, padding=1, groups=expanded, bias=False),
            nn.BatchNorm2d(expanded), nn.ReLU6(),
            nn.Conv2d(expanded, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.head = Head(channels)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.block(x))


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise conv, LayerNorm channels-last (permute, nn.LayerNorm, permute back),
    1x1 expand, GELU, 1x1 project, layer scale, residual (the pointwise layers as 1x1
    convs, so each value stays (N, C, H, W))."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Conv2d(channels, 4 * channels, 1)
        self.pwconv2 = nn.Conv2d(4 * channels, channels, 1)
        self.gamma = nn.Parameter(torch.full((channels,), 0.5))
        self.head = Head(channels)

    def forward(self, x):
        x = self.stem(x)
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = self.pwconv2(F.gelu(self.pwconv1(y)))
        return self.head(x + self.gamma[:, None, None] * y)


class OfficialConvNeXtBlock(nn.Module):
    """ConvNeXt's block as its authors' code writes it: the pointwise layers are Linear layers
    on the channels-last values, between the two permutes."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), 0.5))
        self.head = Head(channels)

    def forward(self, x):
        x = self.stem(x)
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return self.head(x + y.permute(0, 3, 1, 2))


class TinyUNet(nn.Module):
    """Down (conv, pool, conv), up three ways (ConvTranspose, nearest and bilinear
    interpolation), the skip concatenated, a conv, the classifier head."""

    def __init__(self):
        super().__init__()
        self.down1 = nn.Conv2d(3, 4, 3, padding=1)
        self.down2 = nn.Conv2d(4, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fuse = nn.Conv2d(4 + 4 + 8 + 8, 6, 3, padding=1)
        self.head = Head(6)

    def forward(self, x):
        skip = F.relu(self.down1(x))
        deep = F.relu(self.down2(F.max_pool2d(skip, 2)))
        joined = torch.cat([self.up(deep), skip,
                            F.interpolate(deep, scale_factor=2, mode="nearest"),
                            F.interpolate(deep, scale_factor=2, mode="bilinear",
                                          align_corners=False)], 1)
        return self.head(F.relu(self.fuse(joined)))


class Activations(nn.Module):
    """Every activation torch.onnx writes as its own node or as a pattern, side by side."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = Head(6)

    def forward(self, x):
        y = self.conv(x)
        return self.head(F.gelu(y, approximate="tanh") + F.gelu(y) + F.silu(y) + F.hardswish(y)
                         + F.elu(y, 0.5) + torch.clamp(y, -1.0, 2.0) + F.leaky_relu(y, 0.1)
                         + F.relu6(y) + F.hardsigmoid(y) + torch.tanh(y) + torch.sigmoid(y))


TWINS = {"vgg": (VggIsh, (3, 16, 16)), "resnet_block": (ResNetIsh, (3, 12, 12)),
         "mobilenetv3_block": (MobileNetV3Block, (3, 10, 9)),
         "inverted_residual": (InvertedResidual, (3, 9, 10)),
         "convnext_block": (ConvNeXtBlock, (3, 11, 9)),
         "convnext_official_block": (OfficialConvNeXtBlock, (3, 7, 9)),
         "tiny_unet": (TinyUNet, (3, 12, 16)),
         "se_linear_block": (LinearSqueezeExcitation, (3, 7, 8)),
         "activations": (Activations, (3, 7, 6))}


def twin(network: str):
    """The PyTorch twin with every weight (and batchnorm statistic) drawn at random."""
    torch.manual_seed(14)
    module = TWINS[network][0]()
    with torch.no_grad():
        for name, value in module.state_dict().items():
            if name.endswith("running_var"):
                value.uniform_(0.5, 1.5)
            elif value.dtype.is_floating_point:
                value.normal_(0.0, 0.3)
    return module.eval()


def exported(module, shape, path, opset: int, fold: bool = True):
    x = torch.zeros(2, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
        buffer = io.BytesIO()
        torch.onnx.export(module, (x,), buffer, opset_version=opset, dynamo=False,
                          do_constant_folding=fold, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    path.write_bytes(buffer.getvalue())
    return path


def images(shape, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, *shape)).astype(np.float32)


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("network", TWINS)
def test_the_torch_export_imports_and_runs_like_pytorch(network, opset, tmp_path, cl_device):
    module, shape = twin(network), TWINS[network][1]
    imported = import_onnx(exported(module, shape, tmp_path / f"{network}.onnx", opset))
    model = convgraph.compile(imported.spec, device=cl_device, batch=BATCH)
    model.set_params(imported.weights)
    x = images(shape)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = model.forward(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def torch_names(module, weights: dict) -> dict:
    """Each imported weight's PyTorch parameter, found by its values (drawn at random, so
    each is unique; the layer norm's and layer scale's come back as (C,))."""
    found = {}
    for key, value in weights.items():
        for name, parameter in module.named_parameters():
            if parameter.numel() == value.size and np.array_equal(
                    parameter.detach().numpy().reshape(-1), value.reshape(-1)):
                found[key] = name
    return found


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("network", TWINS)
def test_one_sgd_step_on_the_import_is_pytorchs(network, opset, tmp_path, cl_device):
    """Exported without constant folding, so batchnorm stays itself (folded into the conv it
    would train otherwise); one step of plain SGD on one batch, batchnorm in training mode."""
    module, shape = twin(network), TWINS[network][1]
    imported = import_onnx(exported(module, shape, tmp_path / f"{network}.onnx", opset,
                                    fold=False))
    names = torch_names(module, imported.weights)
    trained = {name for name, _ in module.named_parameters()}
    assert set(names.values()) == trained, "every PyTorch parameter is imported"
    spec = {**imported.spec, "train": {"optimizer": "sgd", "lr": LR, "momentum": 0.0,
                                       "batch": BATCH, "epochs": 1, "normalize": False}}
    model = convgraph.compile(spec, device=cl_device, batch=BATCH)
    model.set_params(imported.weights)
    x, y = images(shape), np.arange(BATCH) % CLASSES
    model.fit((x, y), epochs=1, shuffle=False, verbose=0)

    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=LR)
    optimizer.zero_grad()
    F.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    optimizer.step()
    after = dict(module.named_parameters())
    for key, name in names.items():
        want = after[name].detach().numpy().reshape(-1)
        got = model.params[key].reshape(-1)
        before = imported.weights[key].reshape(-1)
        step = float(np.abs(want - before).max())
        assert step > 0, f"{name} did not move in PyTorch"
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * step + 1e-6,
                                   err_msg=f"{key} ({name})")
