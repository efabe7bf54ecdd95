"""Image reading with clear errors: a corrupt or truncated file names itself instead of decoding to grey."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class ImageReadError(ValueError):
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
