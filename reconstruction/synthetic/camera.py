"""Camera of the synthetic dataset: :class:`SynthCamera`, an OPENCV model (fx, fy, cx, cy, k1, k2, p1, p2) with
the pixel-centre convention of the project (integer = pixel centre; COLMAP's parameters are ``+0.5``), its
per-pixel rays (fixed-point undistortion of every pixel centre, for the renderer) and cached vignetting, and the
near plane ``_NEAR`` of the renderer. Distortion and projection are :class:`reconstruction.camera.Camera`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..camera import Camera

_NEAR = 0.05  # near plane, metres


@dataclass
class SynthCamera:
    """OPENCV camera; ``cx``/``cy`` here are in the project's convention (integer = pixel centre).

    Attributes:
        width, height: image size, pixels.
        fx, fy, cx, cy: pinhole intrinsics, pixels (``cx = cx_colmap - 0.5``).
        dist: (4,) OPENCV distortion (k1, k2, p1, p2).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, float, float, float]
    _rays: np.ndarray | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_conf(cls, c: Any) -> "SynthCamera":
        cx = c.width / 2 if c.cx is None else float(c.cx)
        cy = c.height / 2 if c.cy is None else float(c.cy)
        return cls(int(c.width), int(c.height), float(c.fx), float(c.fy), cx - 0.5, cy - 0.5,
                   (float(c.k1), float(c.k2), float(c.p1), float(c.p2)))

    def colmap_params(self) -> list[float]:
        """[fx, fy, cx, cy, k1, k2, p1, p2] in COLMAP's convention (pixel centre at +0.5)."""
        return [self.fx, self.fy, self.cx + 0.5, self.cy + 0.5, *self.dist]

    @property
    def camera(self) -> Camera:
        """The same camera as a :class:`reconstruction.camera.Camera` (COLMAP parameters), which projects."""
        return self._cached("camera", lambda: Camera("OPENCV", self.width, self.height, tuple(self.colmap_params())))

    def distort(self, xn: np.ndarray, yn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Undistorted normalised coordinates (any shape) -> distorted normalised coordinates."""
        return self.camera.distort(xn, yn)

    def project(self, p_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) camera-frame points -> (N, 2) pixels (integer = pixel centre) and (N,) validity: beyond the
        near plane and within the camera's fold-over guard (:meth:`reconstruction.camera.Camera.project`)."""
        return self.camera.project(p_cam, _NEAR)

    def rays(self) -> np.ndarray:
        """(H, W, 3) float64 camera-frame ray directions (x_n, y_n, 1) of the pixel centres (undistorted)."""
        if self._rays is None:
            u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
            xd, yd = (u - self.cx) / self.fx, (v - self.cy) / self.fy
            xn, yn = xd.copy(), yd.copy()
            for _ in range(30):  # fixed-point undistortion, converges to ~1e-12 for small distortion
                ex, ey = self.distort(xn, yn)
                xn, yn = xn + (xd - ex), yn + (yd - ey)
            self._rays = np.stack([xn, yn, np.ones_like(xn)], axis=-1)
        return self._rays

    @property
    def ray_norm(self) -> np.ndarray:
        """(H, W) float32 norms of :meth:`rays` (distance along the ray per metre of z-depth)."""
        return self._cached("ray_norm", lambda: np.linalg.norm(self.rays(), axis=-1).astype(np.float32))

    @property
    def vignette(self) -> np.ndarray:
        """(H, W, 1) float32 vignetting factor."""
        def make():
            yy, xx = np.mgrid[0:self.height, 0:self.width].astype(np.float32)
            r2 = ((xx - self.width / 2) ** 2 + (yy - self.height / 2) ** 2) / ((self.width / 2) ** 2 + (self.height / 2) ** 2)
            return (1 - 0.25 * r2)[..., None]
        return self._cached("vignette", make)

    def _cached(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]
