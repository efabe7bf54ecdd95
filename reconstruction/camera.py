"""The one camera module: COLMAP camera models, projection and unprojection for every method (NumPy and torch),
one guard against distortion fold-over.

Conventions (as everywhere in the project, :mod:`reconstruction.geometry`):
    * Pixels: integer coordinates are pixel centres. :class:`Camera` stores COLMAP's parameters (pixel centre at
      +0.5); :meth:`Camera.project` and :meth:`Camera.cam_from_img` take and return project pixels, converting
      at this boundary only (:func:`to_colmap_pixels` / :func:`from_colmap_pixels`, the only place of the +0.5).
    * Camera frame: x right, y down, z forward (COLMAP / OpenCV).

Projection follows COLMAP's models (``src/colmap/sensor/models.h``): normalised coordinates x = X / Z, y = Y / Z,
distortion of OPENCV (k1, k2, p1, p2: radial ``1 + k1 r^2 + k2 r^4`` and tangential terms), RADIAL (k1, k2),
SIMPLE_RADIAL (k), no distortion for (SIMPLE_)PINHOLE; then u = fx x_d + cx. Unprojection (keypoints to rays) is
pycolmap's (``Camera.cam_from_img``), which inverts any COLMAP model iteratively.

**The fold-over guard** (:attr:`Camera.max_radius2`): a radial polynomial stops increasing beyond some radius and
maps points far outside the field of view back into the image. A point is projected only when its undistorted
normalised radius^2 is below that of the image border (33 pixel centres per side, unprojected by pycolmap) times
1.05^2, and below the radius where ``r (1 + k1 r^2 + k2 r^4)`` stops increasing. Below the guard the model is
monotone, so a point inside the image always passes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import numpy as np

Array = TypeVar("Array")  # np.ndarray or torch.Tensor

# model -> number of parameters (COLMAP order)
SUPPORTED_MODELS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8}
_BORDER_MARGIN = 1.05  # guard radius = largest border radius x this


@dataclass(frozen=True)
class Camera:
    """A camera in COLMAP's model conventions (pixel centres at +0.5 inside the params' frame).

    Attributes:
        model: COLMAP model name, e.g. ``"OPENCV"`` (fx, fy, cx, cy, k1, k2, p1, p2) or ``"PINHOLE"``.
        width, height: image size in pixels.
        params: (P,) model parameters in COLMAP order.
    """

    model: str
    width: int
    height: int
    params: tuple[float, ...]

    def to_pycolmap(self):
        import pycolmap

        return pycolmap.Camera(model=self.model, width=self.width, height=self.height, params=list(self.params))

    @property
    def focal(self) -> float:
        """Mean focal length in pixels (for pixel thresholds on undistorted, normalised coordinates)."""
        if self.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            return float(self.params[0])
        return float((self.params[0] + self.params[1]) / 2)

    # ------------------------------------------------------------------------------------------------ intrinsics
    @cached_property
    def intrinsics(self) -> tuple[float, float, float, float, tuple[float, float, float, float]]:
        """(fx, fy, cx, cy, (k1, k2, p1, p2)) with cx, cy in the project's convention (COLMAP's - 0.5).

        Raises:
            ValueError: a model :meth:`project` does not support (the supported ones: :data:`SUPPORTED_MODELS`),
                or a wrong number of parameters.
        """
        m, p = self.model, [float(v) for v in self.params]
        if m not in SUPPORTED_MODELS:
            raise ValueError(f"cannot project with camera model {m!r} (supported: {', '.join(SUPPORTED_MODELS)})")
        if len(p) != SUPPORTED_MODELS[m]:
            raise ValueError(f"camera model {m} takes {SUPPORTED_MODELS[m]} parameters, got {len(p)}")
        if m in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            fx = fy = p[0]
            cx, cy = p[1:3]
            dist = (p[3:] + [0.0, 0.0])[:2] + [0.0, 0.0]  # (k1, k2) of the radial models, no tangential terms
        else:
            fx, fy, cx, cy = p[:4]
            dist = p[4:8] if m == "OPENCV" else [0, 0, 0, 0]
        return fx, fy, cx - 0.5, cy - 0.5, tuple(float(v) for v in dist)

    @cached_property
    def max_radius2(self) -> float:
        """The fold-over guard: largest undistorted normalised radius^2 that :meth:`project` accepts (module doc)."""
        W, H = self.width, self.height
        k1, k2 = self.intrinsics[4][:2]
        t = np.linspace(0, 1, 33)
        border = np.concatenate([np.stack([t * (W - 1), np.zeros_like(t)], 1),
                                 np.stack([t * (W - 1), np.full_like(t, H - 1)], 1),
                                 np.stack([np.zeros_like(t), t * (H - 1)], 1),
                                 np.stack([np.full_like(t, W - 1), t * (H - 1)], 1)])
        r2_border = np.square(self.cam_from_img(border)).sum(1)  # NaN where the model cannot reach
        r2_border = float(np.nanmax(r2_border)) * _BORDER_MARGIN**2 if np.isfinite(r2_border).any() else np.inf
        # radius where the radial distortion r (1 + k1 r^2 + k2 r^4) stops increasing (fold-over)
        r = np.linspace(0, 10, 10001)[1:]
        falling = np.diff(r * (1 + k1 * r**2 + k2 * r**4)) <= 0
        r_fold = float(r[np.argmax(falling)]) if falling.any() else np.inf
        return min(r2_border, r_fold**2)

    # ---------------------------------------------------------------------------------------------- projection
    def project(self, points_cam: Array, min_depth: float = 1e-6) -> tuple[Array, Array]:
        """Project camera-frame points to pixels with the model's distortion (NumPy or torch, any leading shape).

        Args:
            points_cam: (..., 3) points in the camera frame, metres; ``np.ndarray`` or ``torch.Tensor`` (the
                result has the same type, dtype and device; float32 tensors are computed in float32).
            min_depth: points with z <= this are invalid, metres.
        Returns:
            uv: (..., 2) pixels (x, y), integer = pixel centre; meaningless where not ``valid``.
            valid: (...) bool: in front (z > min_depth) and within the fold-over guard (:attr:`max_radius2`).
                The image bounds are not checked: see :meth:`in_image`.
        Raises:
            ValueError: unsupported model (:attr:`intrinsics`) or a last dimension other than 3.
        """
        if points_cam.shape[-1] != 3:
            raise ValueError(f"points_cam must have shape (..., 3), got {tuple(points_cam.shape)}")
        fx, fy, cx, cy, _ = self.intrinsics
        xp = np if isinstance(points_cam, np.ndarray) else _torch()
        z = points_cam[..., 2]
        front = z > min_depth
        zs = xp.where(front, z, xp.ones_like(z))
        x, y = points_cam[..., 0] / zs, points_cam[..., 1] / zs
        r2 = x * x + y * y
        xd, yd = self._distort(x, y, r2)
        u = fx * xd + cx
        v = fy * yd + cy
        uv = xp.stack([u, v], -1)
        return uv, front & (r2 < self.max_radius2)

    def distort(self, x: Array, y: Array) -> tuple[Array, Array]:
        """The model's distortion: undistorted normalised coordinates (any shape, NumPy or torch) -> distorted
        normalised coordinates (no guard: see :meth:`project`)."""
        return self._distort(x, y, x * x + y * y)

    def _distort(self, x: Array, y: Array, r2: Array) -> tuple[Array, Array]:
        k1, k2, p1, p2 = self.intrinsics[4]
        radial = 1 + k1 * r2 + k2 * r2 * r2
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return xd, yd

    def in_image(self, uv: Array) -> Array:
        """(..., 2) pixels (integer = pixel centre) -> (...) bool: inside the image (-0.5 < x < width - 0.5, same
        for y). NumPy or torch."""
        u, v = uv[..., 0], uv[..., 1]
        return (u > -0.5) & (u < self.width - 0.5) & (v > -0.5) & (v < self.height - 0.5)

    # -------------------------------------------------------------------------------------------- unprojection
    def cam_from_img(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) pixels (integer = pixel centre) -> (N, 2) undistorted normalised coordinates (x/z, y/z).

        The model's distortion is inverted by pycolmap (``pycolmap.Camera.cam_from_img``); NaN where the model
        cannot be inverted.
        """
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if len(xy) == 0:
            return np.zeros((0, 2))
        return self.to_pycolmap().cam_from_img(to_colmap_pixels(xy))

    def bearings(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) pixels (integer = pixel centre) -> (N, 3) unit bearing vectors in the camera frame (undistorted)."""
        xn = self.cam_from_img(xy)
        b = np.concatenate([xn, np.ones((len(xn), 1))], axis=1)
        return b / np.linalg.norm(b, axis=1, keepdims=True)


def to_colmap_pixels(xy: np.ndarray) -> np.ndarray:
    """Project convention (integer = pixel centre) -> COLMAP convention (pixel centre at +0.5)."""
    return np.asarray(xy, dtype=np.float64) + 0.5


def from_colmap_pixels(xy: np.ndarray) -> np.ndarray:
    """COLMAP convention (pixel centre at +0.5) -> project convention (integer = pixel centre)."""
    return np.asarray(xy, dtype=np.float64) - 0.5


def _torch():
    import torch

    return torch


def project_world(points3D: np.ndarray, cam_from_world: np.ndarray, camera: Camera,
                  min_depth: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Project world points with a pose and the camera model (distortion and fold-over guard included).

    Args:
        points3D: (N, 3) world points, metres.
        cam_from_world: (3, 4) pose, world -> camera.
        camera: intrinsics.
        min_depth: points with depth <= this are invalid, metres.
    Returns:
        xy: (N, 2) pixels (integer = pixel centre); valid: (N,) bool, in front, within the guard and inside
        the image.
    """
    Xc = np.asarray(points3D, np.float64) @ cam_from_world[:, :3].T + cam_from_world[:, 3]
    xy, valid = camera.project(Xc, min_depth)
    return xy, valid & camera.in_image(xy)

