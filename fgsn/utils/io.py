"""File helpers shared by every package: image reading with clear errors (a corrupt or truncated file names
itself instead of decoding to grey) and atomic writes (write to a temporary file, then replace).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import UserError


class ImageReadError(UserError, ValueError):
    """An image file is missing, truncated or not decodable; the message names the file and the problem."""


def read_image(path: str | Path, grayscale: bool = False) -> np.ndarray:
    """Read an image fully (truncated JPEG/PNG files are detected, unlike ``cv2.imread``).

    Args:
        path: image file.
        grayscale: return (H, W) luminance instead of (H, W, 3) RGB.
    Returns:
        uint8 array, (H, W, 3) RGB or (H, W).
    Raises:
        ImageReadError: missing file, truncated or corrupt data (message names the file and the decoder error).
    """
    from PIL import Image, ImageFile

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("L" if grayscale else "RGB")
            return np.asarray(im).copy()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot decode image ({e})") from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Write a file atomically: yields a temporary path beside ``path`` to write to (with any writer: text,
    h5py, ``torch.save``); on success it replaces ``path`` (``os.replace``, atomic on one filesystem), on an
    exception it is removed and ``path`` is left untouched. A run killed mid-write never leaves a partial
    ``path``: at worst a stale ``<name>.tmp`` that the next write overwrites.

    Example::

        with atomic_path(out / "labels.h5") as tmp:
            with h5py.File(tmp, "w") as f:
                ...
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_h5_atomic(path: str | Path, arrays: Mapping[str, Any]) -> Path:
    """Write an HDF5 file of datasets atomically (:func:`atomic_path`), creating its folder; returns ``path``.

    Args:
        path: the file to write.
        arrays: dataset name -> array, in the order they are created; the key ``attrs`` (a mapping) holds the
            file attributes instead.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for k, v in arrays.items():
            if k != "attrs":
                f[k] = v
        f.attrs.update(arrays.get("attrs", {}))
    return path
