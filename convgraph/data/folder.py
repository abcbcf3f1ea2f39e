"""Image files sorted into one sub-folder per class, read with Pillow (an optional dependency).

Layout: ``DIR/train/<class>/*.png`` and ``DIR/test/<class>/...``; a folder with no ``train``/
``test`` sub-folders is taken as ``DIR/<class>/...`` and serves both splits (the Dataset's ``note``
says so). Classes are the sub-folder names in sorted order, so labels do not depend on the order
the file system lists them in. Images must already have the spec's width and height: resizing
would silently change what the network sees, so a different size is an error.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from convgraph.core import Volume
from convgraph.errors import DataError
from convgraph.files import readable_file

from .dataset import Dataset, check_fits, listing, require_dir

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_HINT = ("lay the images out as DIR/train/<class>/*.png and DIR/test/<class>/*.png (or "
         "DIR/<class>/*.png for both), one sub-folder per class.")


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError(
            "the folder data set reads images with Pillow, which is not installed.",
            hint="pip install pillow (or pip install -e '.[images]' in a convgraph checkout).",
        ) from None
    return Image


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether a folder entry is a folder; a symlink loop or an unreadable link is not (it is
    then refused, naming it, when read as an image)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _class_folders(root: str) -> list[str]:
    return sorted(entry.name for entry in os.scandir(root)
                  if _is_folder(entry) and not entry.name.startswith("."))


def _image_files(folder: str) -> list[str]:
    # every entry with an image's name that is not a folder: a FIFO, device or dangling link
    # among them is refused when read (readable_file), never skipped in silence
    return sorted(entry.path for entry in os.scandir(folder)
                  if not _is_folder(entry) and not entry.name.startswith(".")
                  and entry.name.lower().endswith(EXTENSIONS))


# 8-bit modes Pillow converts to L or RGB without losing the range; 16-bit and float images
# ("I;16", "I", "F") would be clipped or truncated to 0..255 in silence, so they are refused.
_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
          "HSV")


def _read_image(Image, path: str, volume: Volume) -> np.ndarray:
    """One image as (depth, height, width) uint8.

    Its size and mode are read from the header and checked before any pixel is decoded, so a
    file is never decoded to more than the spec's width x height; Pillow's decompression-bomb
    guard (``Image.MAX_IMAGE_PIXELS``) is an error, not a warning."""
    readable_file(path, "image")
    size = mode = pixels = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                size, mode = image.size, image.mode
                if size == (volume.width, volume.height) and mode in _MODES:
                    image.load()
                    image = image.convert("L" if volume.depth == 1 else "RGB")
                    pixels = np.asarray(image, dtype=np.uint8)
    except Image.DecompressionBombWarning as why:  # DecompressionBombError is one too
        raise DataError(
            f"image {path} claims more pixels than the {Image.MAX_IMAGE_PIXELS:,} Pillow decodes "
            f"safely ({why}); it is corrupt or a decompression bomb and was not decoded.",
            hint="remove or replace the file.") from None
    except Exception as why:  # Pillow's decoders raise many kinds on bad files
        # UnidentifiedImageError and "image file is truncated" are OSErrors; malformed headers
        # come as ValueError, SyntaxError, struct.error, EOFError, IndexError ...
        raise DataError(f"image {path} cannot be read ({type(why).__name__}: {why}); it may be "
                        "corrupt or not an image.", hint="remove or replace the file.") from None
    if size != (volume.width, volume.height):
        raise DataError(
            f"image {path} is {size[0]}x{size[1]}, but the spec's input is "
            f"{volume.width}x{volume.height} (images are not resized, so that the network sees "
            "what you gave it).",
            hint=f"resize the images to {volume.width}x{volume.height} beforehand, or change the "
            "spec's input.",
        )
    if pixels is None:
        raise DataError(
            f"image {path} has mode {mode}, which is not an 8-bit image: converting it to "
            f"{'grayscale' if volume.depth == 1 else 'RGB'} would clip or truncate its values.",
            hint="save the images as 8-bit grayscale (L) or colour (RGB), e.g. with Pillow's "
            "image.convert(...) after scaling them to 0..255 yourself.",
        )
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _split_root(path: str, split: str) -> tuple[str, str | None]:
    """(folder whose sub-folders are the classes, note or None)."""
    has_train = os.path.isdir(os.path.join(path, "train"))
    has_test = os.path.isdir(os.path.join(path, "test"))
    if has_train or has_test:
        root = os.path.join(path, split)
        if not os.path.isdir(root):
            raise DataError(f"the folder data set {path} has no {split}/ sub-folder (it holds "
                            f"{listing(path)}).", hint=_HINT)
        return root, None
    note = (f"{path} has no train/ and test/ sub-folders, so its class folders serve as both "
            "the training and the test set; test accuracy will be training accuracy.")
    return path, note


def load_folder(path: str | None, split: str, volume: Volume, classes: int) -> Dataset:
    """Load ``split`` of an image-folder data set at ``path`` for the spec's ``volume``."""
    if path is None:
        raise DataError("the folder data set needs a folder.", hint="pass --data DIR; " + _HINT)
    require_dir(path, "the folder data set", hint=_HINT)
    if volume.depth not in (1, 3):
        raise DataError(f"the folder data set gives grayscale (depth 1) or RGB (depth 3) images, "
                        f"but the spec's input is {volume}.",
                        hint="use depth 1 or 3, or save the data as .npz (any depth).")
    Image = _pillow()
    root, note = _split_root(path, split)
    names = _class_folders(root)
    if not names:
        raise DataError(f"{root} has no class sub-folders (it holds {listing(root)}).",
                        hint=_HINT)
    train_root = os.path.join(path, "train")
    if split == "test" and note is None and os.path.isdir(train_root):
        # labels are positions in the sorted list, so both splits must list the same classes
        train_names = _class_folders(train_root)
        if train_names != names:
            raise DataError(
                f"{root} has class folders {names}, but {train_root} has {train_names}; both "
                "splits need the same classes, or the labels would not mean the same thing.",
                hint=_HINT,
            )
    check_fits(f"the folder data set {root}", volume, len(names), volume, classes)

    files, labels = [], []
    for label, name in enumerate(names):
        found = _image_files(os.path.join(root, name))
        if not found and split == "train":
            raise DataError(f"class folder {os.path.join(root, name)} holds no images "
                            f"({', '.join(EXTENSIONS)}).", hint=_HINT)
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"{root} holds no images in its class folders.", hint=_HINT)

    x = np.empty((len(files), volume.depth, volume.height, volume.width), np.uint8)
    for i, file in enumerate(files):
        x[i] = _read_image(Image, file, volume)
    return Dataset(f"folder {os.path.basename(os.path.normpath(path))} ({split})", x,
                   np.asarray(labels, np.int64), classes, names, note)
