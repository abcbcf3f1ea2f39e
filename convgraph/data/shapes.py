"""The shapes set: a small synthetic segmentation data set, generated in code (no download).

Each image is a noisy background with one to three coloured geometric shapes (disc, square,
triangle, ring, cross) of random position, size and rotation; its mask gives each pixel the class
of the shape on top there, 0 for the background. Class k's colour is a fixed hue with random
jitter, so a tiny network finds the classes within an epoch and then learns their outlines.
Any input volume of at least 8x8 pixels; 2 to 6 classes (the background and up to five shapes).
The result depends only on (split, volume, classes, seed), and 640 images of 32x32 take
milliseconds.
"""

from __future__ import annotations

import numpy as np

from convgraph.core import Volume
from convgraph.errors import DataError

from .dataset import Dataset

CLASS_NAMES = ["background", "disc", "square", "triangle", "ring", "cross"]
SIZES = {"train": 512, "test": 128}
MIN_SIDE = 8
_SPLIT_STREAM = {"train": 10, "test": 11}
_CHUNK = 64  # images generated at a time: bounds the float temporaries for large inputs
_MOST_SHAPES = 3
# a base colour per shape class (RGB in [0, 1]); fewer channels take the first ones
_PALETTE = np.array([[0.9, 0.2, 0.2], [0.2, 0.85, 0.3], [0.25, 0.35, 0.95],
                     [0.95, 0.85, 0.2], [0.85, 0.3, 0.9]])


def _inside(kind: np.ndarray, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Whether each pixel (rotated coordinates u, v about the centre) lies in the shape of
    class ``kind`` (1..5) with radius ``r``; arrays broadcast over (images, H, W)."""
    distance = np.hypot(u, v)
    third = r / 3
    triangle = np.ones(u.shape, bool)
    for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        triangle &= u * np.cos(angle) + v * np.sin(angle) < r / 2
    shapes = [distance < r,
              np.maximum(np.abs(u), np.abs(v)) < 0.8 * r,
              triangle,
              (distance < r) & (distance > 0.55 * r),
              ((np.abs(u) < third) & (np.abs(v) < r)) | ((np.abs(v) < third) & (np.abs(u) < r))]
    result = np.zeros(u.shape, bool)
    for index, shape in enumerate(shapes, start=1):
        result |= (kind == index) & shape
    return result


def _chunk(rng: np.random.Generator, n: int, volume: Volume, classes: int):
    """``n`` images (uint8, (n, depth, H, W)) and masks (uint8, (n, H, W))."""
    depth, height, width = volume.depth, volume.height, volume.width
    side = min(width, height)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
    level = rng.uniform(0.2, 0.7, (n, depth, 1, 1))
    image = level + rng.normal(0.0, 0.08, (n, depth, height, width))
    mask = np.zeros((n, height, width), np.uint8)
    palette = np.resize(_PALETTE, (classes, 3))
    for slot in range(_MOST_SHAPES):
        present = rng.random(n) < (1.0 if slot == 0 else 0.5)
        kind = rng.integers(1, classes, n)
        radius = rng.uniform(0.14, 0.3, n) * side
        cx = rng.uniform(0.0, 1.0, n) * (width - 1)
        cy = rng.uniform(0.0, 1.0, n) * (height - 1)
        angle = rng.uniform(0.0, 2 * np.pi, n)
        colour = palette[kind - 1][:, :depth] + rng.uniform(-0.12, 0.12, (n, depth))
        if depth > 3:
            colour = np.pad(colour, ((0, 0), (0, depth - 3)), constant_values=0.5)
        dx, dy = columns - cx[:, None, None], rows - cy[:, None, None]
        cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        inside = _inside(kind[:, None, None], cos * dx + sin * dy, cos * dy - sin * dx,
                         radius[:, None, None]) & present[:, None, None]
        image = np.where(inside[:, None], colour[:, :, None, None], image)
        mask = np.where(inside, kind[:, None, None].astype(np.uint8), mask)
    pixels = np.clip(image + rng.normal(0.0, 0.03, image.shape), 0.0, 1.0)
    return (pixels * 255 + 0.5).astype(np.uint8), mask


def generate(volume: Volume, classes: int, count: int, seed: int = 0, stream: int = 0):
    """``count`` images and masks, a function of (volume, classes, count, seed, stream)."""
    rng = np.random.default_rng([seed, stream, volume.width, volume.height, volume.depth,
                                 classes])
    parts = [_chunk(rng, min(_CHUNK, count - start), volume, classes)
             for start in range(0, count, _CHUNK)]
    x = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, volume.depth,
                                                                       volume.height,
                                                                       volume.width), np.uint8)
    y = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, volume.height,
                                                                       volume.width), np.uint8)
    return x, y


def load_shapes(split: str, volume: Volume, classes: int, output: Volume | None = None,
                seed: int = 0) -> Dataset:
    """The shapes set's ``split`` (512 train / 128 test images), masks the size of the input
    (which must be the network's ``output`` size)."""
    if not 2 <= classes <= len(CLASS_NAMES):
        raise DataError(
            f"the shapes set has 2 to {len(CLASS_NAMES)} classes ({', '.join(CLASS_NAMES)}), "
            f"but the network outputs {classes} scores per pixel.",
            hint=f"end the network with a 1x1 conv to 2 to {len(CLASS_NAMES)} filters.")
    if min(volume.width, volume.height) < MIN_SIDE:
        raise DataError(
            f"the shapes set draws shapes on at least {MIN_SIDE}x{MIN_SIDE} pixels, but the "
            f"spec's input is {volume}.", hint="use a larger input.")
    if output is not None and (output.width, output.height) != (volume.width, volume.height):
        raise DataError(
            f"the shapes set's masks are the input's size ({volume.width}x{volume.height}), "
            f"but the network outputs {output}.",
            hint="make the network's output as wide and high as its input (a U-Net with "
                 "'same' padding), or train on your own masks (train: {dataset: npz}).")
    x, y = generate(volume, classes, SIZES[split], seed, _SPLIT_STREAM[split])
    return Dataset(f"shapes ({split})", x, y, classes, CLASS_NAMES[:classes])
