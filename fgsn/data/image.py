"""Image resizing shared by the FGSN datasets and inference (reading: :func:`fgsn.utils.io.read_image`)."""
from __future__ import annotations

import cv2
import numpy as np


def resize_short_side(image: np.ndarray, short: int | None, interpolation=cv2.INTER_LINEAR) -> tuple[np.ndarray, float]:
    """Resize so that the shorter side is ``short`` pixels (None or <= 0: unchanged).

    Returns:
        The resized image and the scale s (new = old * s; pixel centres map as (x + 0.5) * s - 0.5).
    """
    if not short or short <= 0:
        return image, 1.0
    h, w = image.shape[:2]
    s = short / min(h, w)
    if abs(s - 1) < 1e-9:
        return image, 1.0
    size = (max(int(round(w * s)), 1), max(int(round(h * s)), 1))
    return cv2.resize(image, size, interpolation=interpolation), s


def scale_points(points: np.ndarray, s: float) -> np.ndarray:
    """(N, 2) pixel coordinates (integer = pixel centre) scaled by s: (x + 0.5) * s - 0.5."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * s - 0.5
