"""The embedded data set: procedural shapes and textures, generated in code for any input volume.

It lets every spec train out of the box, with no download, at whatever width x height x depth its
input says. Each class is a pattern -- five shapes (disc, square, triangle, cross, ring) and five
textures (horizontal, vertical and diagonal stripes, checkerboard, dots) -- drawn with a random
position, size, rotation, period and phase, random foreground and background colours of random
contrast and polarity, a random illumination gradient and pixel noise. Random polarity and
position mean no single linear template matches a class, so a linear classifier stays far from
100%, while a small convnet (edges, then shapes) learns it well.

Everything is vectorised over images; generation is chunked so that the float temporaries stay
small whatever the image size. The result depends only on (seed, split, volume, classes).
"""

from __future__ import annotations

import numpy as np

from convgraph.core import Volume
from convgraph.errors import DataError

from .dataset import Dataset

CLASS_NAMES = ["disc", "square", "triangle", "cross", "ring", "horizontal stripes",
               "vertical stripes", "diagonal stripes", "checkerboard", "dots"]
SHAPES = 5  # the first five classes are shapes, the rest textures

SIZES = {"train": 10_000, "test": 2_000}
MIN_SIDE = 8  # below this the patterns cannot be told apart
_SPLIT_STREAM = {"train": 0, "test": 1}  # a different random stream per split
_CHUNK_VALUES = 1 << 21  # float values per temporary array (8 MiB as float32)


def _soft(distance: np.ndarray) -> np.ndarray:
    """Coverage of a pixel from its signed distance (in pixels, negative inside) to an edge.

    A one-pixel ramp instead of a hard threshold anti-aliases the edges, so that small
    patterns at low resolution still look like what they are.
    """
    return np.clip(0.5 - distance, 0.0, 1.0)


def _tint(rng: np.random.Generator, n: int, depth: int) -> np.ndarray:
    """A random colour offset per image with zero mean over the channels, so that it changes the
    hue but not the brightness (and so not the contrast); zero for one channel."""
    tint = rng.uniform(-0.12, 0.12, (n, depth))
    return tint - tint.mean(axis=1, keepdims=True)


def _draw_params(rng: np.random.Generator, n: int, volume: Volume, classes: int) -> dict:
    """Every per-image random choice, drawn up front so chunking cannot change the images."""
    side = min(volume.width, volume.height)
    labels = rng.permutation(np.arange(n) % classes)  # exactly balanced, in random order
    p = {"label": labels}
    # Shapes: radius in pixels, centre kept so most of the shape is inside the image.
    radius = rng.uniform(0.2, 0.42, n) * side
    p["radius"] = radius
    p["cx"] = rng.uniform(0.0, 1.0, n) * (volume.width - 1.4 * radius) + 0.7 * radius - 0.5
    p["cy"] = rng.uniform(0.0, 1.0, n) * (volume.height - 1.4 * radius) + 0.7 * radius - 0.5
    p["angle"] = rng.uniform(0.0, 2 * np.pi, n)
    # Textures: period (>= 3 px to stay above the pixel grid), phase, orientation jitter, and a
    # rectangular window so that a texture is not always the whole image.
    p["period"] = np.maximum(3.0, rng.uniform(0.14, 0.3, n) * side)
    p["phase"] = rng.uniform(0.0, 1.0, (n, 2))
    p["jitter"] = rng.uniform(-0.2, 0.2, n)  # radians, about +-11 degrees
    p["diagonal"] = rng.integers(0, 2, n)  # "/" or "\"
    window_w = rng.uniform(0.55, 1.0, n) * volume.width
    window_h = rng.uniform(0.55, 1.0, n) * volume.height
    x0 = rng.uniform(0.0, 1.0, n) * (volume.width - window_w)
    y0 = rng.uniform(0.0, 1.0, n) * (volume.height - window_h)
    p["window"] = np.stack([x0, y0, x0 + window_w, y0 + window_h], axis=1)
    p["dot"] = rng.uniform(0.22, 0.36, n)  # dot radius as a fraction of the period
    # Colours: background level, contrast of random sign (light on dark or dark on light),
    # and a small tint per channel so colour is never a class cue.
    background = rng.uniform(0.15, 0.85, n)
    contrast = rng.uniform(0.18, 0.5, n) * rng.choice([-1.0, 1.0], n)
    foreground = background + contrast
    # where that leaves [0, 1], go the other way (always possible: background +- contrast)
    foreground = np.where((foreground < 0) | (foreground > 1), background - contrast, foreground)
    p["bg"] = background[:, None] + _tint(rng, n, volume.depth)
    p["fg"] = foreground[:, None] + _tint(rng, n, volume.depth)
    p["gradient"] = rng.uniform(-0.15, 0.15, (n, 2)) / side  # illumination slope per pixel
    p["noise"] = rng.uniform(0.02, 0.08, n)
    # float32 from here on: the images are float32 until quantised, and half the memory traffic
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in p.items()}


def _shape_distance(kind: int, u, v, radius):
    """Signed distance in pixels to the edge of shape class ``kind``; (u, v) are rotated
    coordinates relative to the centre in units of the radius."""
    if kind == 0:  # disc
        d = np.hypot(u, v) - 1.0
    elif kind == 1:  # square (Chebyshev distance: exact along the axes)
        d = np.maximum(np.abs(u), np.abs(v)) - 0.8
    elif kind == 2:  # equilateral triangle: the three half-planes of its sides
        d = np.maximum(np.maximum(-v, 0.866 * u + 0.5 * v), -0.866 * u + 0.5 * v) - 0.5
    elif kind == 3:  # cross: the union (min) of two bars
        bar_h = np.maximum(np.abs(u) - 1.0, np.abs(v) - 0.3)
        bar_v = np.maximum(np.abs(u) - 0.3, np.abs(v) - 1.0)
        d = np.minimum(bar_h, bar_v)
    else:  # ring
        d = np.abs(np.hypot(u, v) - 0.72) - 0.25
    return d * radius


def _texture_coverage(kind: int, x, y, q: dict):
    """Coverage in [0, 1] of texture class ``kind`` at pixel coordinates (x, y)."""
    period = q["period"]
    if kind == 5:  # horizontal stripes
        angle = q["jitter"]
    elif kind == 6:  # vertical stripes
        angle = q["jitter"] + np.pi / 2
    elif kind == 7:  # diagonal stripes, either way
        angle = q["jitter"] + np.where(q["diagonal"] == 1, 1, -1).astype(np.float32) * np.pi / 4
    else:  # checkerboard and dots: a slightly rotated grid
        angle = q["jitter"]
    cos, sin = np.cos(angle), np.sin(angle)
    # a: along the stripes, b: across them (in periods, shifted by the phase)
    a = (x * cos + y * sin) / period + q["phase"][:, 0, None, None]
    b = (-x * sin + y * cos) / period + q["phase"][:, 1, None, None]
    if kind in (5, 6, 7):
        # stripe pattern across b: distance (in pixels) from the centre of the nearest band
        d = (np.abs((b % 1.0) - 0.5) - 0.25) * period
        return _soft(d)
    if kind == 8:
        # checkerboard: inside exactly one of two perpendicular sets of bands (XOR), at the
        # distance of the nearer band edge
        da = (np.abs((a % 1.0) - 0.5) - 0.25) * period
        db = (np.abs((b % 1.0) - 0.5) - 0.25) * period
        return _soft(np.sign(da * db) * np.minimum(np.abs(da), np.abs(db)))
    # dots: distance to the nearest lattice point
    da, db = (a % 1.0) - 0.5, (b % 1.0) - 0.5
    return _soft((np.hypot(da, db) - q["dot"]) * period)


def _render(p: dict, lo: int, hi: int, volume: Volume, rng: np.random.Generator) -> np.ndarray:
    """Images lo..hi as uint8 (n, D, H, W)."""
    n = hi - lo
    q = {key: value[lo:hi] for key, value in p.items()}
    expand = {key: (value[:, None, None] if value.ndim == 1 else value)
              for key, value in q.items() if key not in ("window", "phase")}
    expand["phase"], expand["window"] = q["phase"], q["window"]
    ys, xs = np.mgrid[0:volume.height, 0:volume.width].astype(np.float32)
    coverage = np.empty((n, volume.height, volume.width), np.float32)
    for kind in np.unique(q["label"]):
        rows = np.flatnonzero(q["label"] == kind)
        sub = {key: value[rows] for key, value in expand.items()}
        if kind < SHAPES:
            cos, sin = np.cos(sub["angle"]), np.sin(sub["angle"])
            dx, dy = xs - sub["cx"], ys - sub["cy"]
            u = (dx * cos + dy * sin) / sub["radius"]
            v = (-dx * sin + dy * cos) / sub["radius"]
            coverage[rows] = _soft(_shape_distance(int(kind), u, v, sub["radius"]))
        else:
            texture = _texture_coverage(int(kind), xs, ys, sub)
            w = sub["window"]
            inside = np.minimum(
                np.minimum(xs - w[:, 0, None, None], w[:, 2, None, None] - xs),
                np.minimum(ys - w[:, 1, None, None], w[:, 3, None, None] - ys))
            coverage[rows] = texture * _soft(-inside)
    # compose: background + coverage * (foreground - background), per channel
    cov = coverage[:, None]
    bg, fg = q["bg"][:, :, None, None], q["fg"][:, :, None, None]
    light = (q["gradient"][:, 0, None, None] * (xs - volume.width / 2)
             + q["gradient"][:, 1, None, None] * (ys - volume.height / 2))[:, None]
    noise = rng.standard_normal((n, volume.depth, volume.height, volume.width), np.float32)
    image = bg + cov * (fg - bg) + light + noise * q["noise"][:, None, None, None]
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def generate(volume: Volume, classes: int, n: int, seed: int, stream: int = 0) -> tuple:
    """Generate ``n`` images of ``volume`` in ``classes`` classes.

    Returns
    -------
    (x, y) : (numpy.ndarray, numpy.ndarray)
        uint8 (n, depth, height, width) and int64 (n,).
    """
    rng = np.random.default_rng([seed, stream, *volume, classes])
    p = _draw_params(rng, n, volume, classes)
    x = np.empty((n, volume.depth, volume.height, volume.width), np.uint8)
    chunk = max(1, _CHUNK_VALUES // max(1, volume.elements))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        x[lo:hi] = _render(p, lo, hi, volume, rng)  # the noise stream follows chunk order
    return x, p["label"].astype(np.int64)


def generation_bytes(volume: Volume, n: int) -> int:
    """Host bytes ``generate`` takes at its peak, from the shapes: the uint8 images and one
    chunk's float32 temporaries (measured with tracemalloc: about (32 + 16 x depth) bytes per
    pixel of each image in a chunk, and the pixel grid)."""
    chunk = min(n, max(1, _CHUNK_VALUES // max(1, volume.elements)))
    pixels = volume.width * volume.height
    return n * volume.elements + chunk * pixels * (40 + 16 * volume.depth) + 24 * pixels


def largest_side(volume: Volume, n: int, budget: int) -> int:
    """The largest s such that an s x s input of this depth is generated within ``budget``
    bytes (0: not even MIN_SIDE)."""
    low, high = 0, max(volume.width, volume.height)
    while high - low > 1:
        middle = (low + high) // 2
        fits = generation_bytes(Volume(middle, middle, volume.depth), n) <= budget
        low, high = (middle, high) if fits else (low, middle)
    return low if low >= MIN_SIDE else 0


def check_generation(split: str, volume: Volume) -> int:
    """Refuse (DeviceError, exit status 4, before allocating) a split the host cannot hold."""
    from convgraph.memory import MARGIN, check_host, host_available

    n = SIZES[split]
    needed = generation_bytes(volume, n)
    available, _ = host_available()
    side = largest_side(volume, n, int(available * MARGIN))
    fits = (f"an input of at most {side}x{side}x{volume.depth} fits here"
            if side else "not even the smallest input fits here")
    return check_host(
        needed, f"the embedded data set's {split} split ({n:,} images of {volume})",
        [(f"{n:,} images as uint8", n * volume.elements),
         ("the generator's float32 temporaries", needed - n * volume.elements)],
        hint=f"{fits}; use a smaller input, or train on your own data (train: {{dataset: npz, "
             "data: FILE}) on a machine with more memory.")


def load_embedded(split: str, volume: Volume, classes: int, seed: int = 0) -> Dataset:
    """The embedded data set's ``split`` (10,000 train / 2,000 test images), uint8."""
    if not 2 <= classes <= len(CLASS_NAMES):
        raise DataError(
            f"the embedded data set has 2 to {len(CLASS_NAMES)} classes "
            f"({', '.join(CLASS_NAMES)}), but the spec's output has {classes}.",
            hint=f"give the last layer 2 to {len(CLASS_NAMES)} units, or train on another data "
            "set (train: {dataset: cifar10, data: DIR}).",
        )
    if min(volume.width, volume.height) < MIN_SIDE:
        raise DataError(
            f"the embedded data set draws shapes and textures of at least {MIN_SIDE}x{MIN_SIDE} "
            f"pixels, but the spec's input is {volume}.",
            hint="use a larger input, or train on your own data (train: {dataset: npz}).",
        )
    check_generation(split, volume)
    x, y = generate(volume, classes, SIZES[split], seed, _SPLIT_STREAM[split])
    return Dataset(f"embedded ({split})", x, y, classes, CLASS_NAMES[:classes])
