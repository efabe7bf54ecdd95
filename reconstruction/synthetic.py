"""Procedural demo dataset: a textured street rendered in NumPy, in the Extended CMU Seasons layout.

Nothing is read from disk: the scene, its textures, the trajectories and the appearance conditions are all
generated from ``conf.seed``, so the same configuration always gives the same files.

Scene (world units metres, world up = +z, the street runs along +x)::

    ground z = 0: road |y| < road_width_m / 2, sidewalks up to the building fronts (curb, slabs, markings)
    buildings: axis-aligned boxes on both sides, fronts at |y| = road/2 + sidewalk + setback (varying),
               heights 6-22 m; facades with bricks/plaster/stone, windows with frames, doors, shop signs
               with random text, posters, graffiti; closing buildings across both ends of the street
    trees (trunk + canopy boxes) and lamp posts on the sidewalks; a sky panorama above

Semantic class ids (``CLASSES``): 0 sky, 1 road, 2 sidewalk (incl. curb), 3 building wall, 4 window (glass and
frame), 5 door, 6 vegetation, 7 sign/poster, 8 road marking, 9 pole/trunk.

Cameras: OPENCV model (fx, fy, cx, cy, k1, k2, p1, p2) with a small radial distortion; the images are rendered
WITH the distortion. ``intrinsics.txt`` holds COLMAP's parameters: pixel centres at +0.5, so a camera-frame
point projects to the project's pixel (integer = pixel centre) ``u = fx * x_d + cx - 0.5``.

Output layout under ``out_dir`` (``N`` = slice id, ``<cond>`` in ``conf.conditions``)::

    config.yaml                                   merged configuration
    intrinsics.txt                                "c0 OPENCV w h fx fy cx cy k1 k2 p1 p2" ('#' header lines)
    sliceN/database/img_XXXXX_c0_<us>us.jpg       reference ("database") traversal, condition "reference"
    sliceN/query/img_XXXXX_c0_<us>us.jpg          query traversals, one per condition
    sliceN/ground-truth-database-images-sliceN.txt        "name qw qx qy qz cx cy cz"
    sliceN/camera-poses/slice-N-gt-query-images-<cond>.txt  same format
    sliceN/test-images-sliceN.txt                 query basenames (all conditions)
    sliceN/semantics/{database,query}/img_XXXXX_c0_<us>us.png   uint8 class map (ids above), same size
    sliceN/odometry/{database,<cond>}.txt         "name_prev name_cur qw qx qy qz tx ty tz" per line:
                                                  cur_from_prev, the exact rigid transform from the previous
                                                  frame's camera to the current one (X_cur = R X_prev + t,
                                                  quaternion (w, x, y, z)); consumers add their own noise
    correspondence/sliceN/correspondence_data/correspondence_sliceN_runref_run<cond>_c<i>_c<j>.mat
    correspondence/sliceN/images/sliceN/reference/<name>.jpg   database image i (reference condition)
    correspondence/sliceN/images/sliceN/<cond>/<name>.jpg      database view j rendered under <cond>

Quaternions are world-to-camera (w, x, y, z); the three numbers after them are the camera centre C. Image
numbers ``XXXXX`` run over the database then the query traversals of a slice (``1`` upwards); timestamps are
microseconds since the epoch, one date per traversal. ``sparse/`` is not written: ``fgsn-loc build-map``
triangulates it from the database images and their ground-truth poses.

Correspondence files (HDF5, MATLAB v7.3 style): ``im_i_path``/``im_j_path`` (L, 1) uint16 character codes of
the image path relative to ``images/``; ``pt_i``/``pt_j`` (N, 2) float64 pixels (x, y), 0-based, integer =
pixel centre; ``dist_from_center`` (N, 1) float64, the distance of ``pt_i`` from the image centre divided by
half the image diagonal. ``c<i>``/``c<j>`` are 0-based indices into the database traversal. ``pt_i`` are pixel
centres of image i; ``pt_j`` the exact projections of the same 3D surface points (depth-buffer occlusion
test) into view j.

Conditions (``CONDITIONS``): ``reference`` (overcast day, the database), ``dusk`` (dark, warm, lamps on),
``autumn`` (low sun, orange foliage, leaves on the ground), ``sun`` (hard sunlight, saturated), ``snow``
(snow-covered ground and foliage, haze, falling flakes, blur), ``night`` (dark, street lamps, headlights,
lit windows, lamp glows, sensor noise).
"""
from __future__ import annotations

import argparse
import logging
import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf

from .geometry import rotmat_to_qvec

logger = logging.getLogger(__name__)

CLASSES = {0: "sky", 1: "road", 2: "sidewalk", 3: "wall", 4: "window", 5: "door", 6: "vegetation",
           7: "sign/poster", 8: "road marking", 9: "pole/trunk"}
CONDITIONS = ("reference", "dusk", "autumn", "sun", "snow", "night")

default_conf = {
    "seed": 0,  # master seed of scene, trajectories and condition effects (integer)
    "slices": [2],  # slice ids to generate (Extended CMU numbering; 2-8 are "urban"), one street per slice
    "conditions": ["dusk", "autumn", "snow", "night"],  # query conditions, subset of CONDITIONS minus reference
    "jpeg_quality": 92,  # JPEG quality of all images, 0-100
    "write_semantics": True,  # write the per-pixel class maps (uint8 PNG) of database and query images
    "write_correspondences": True,  # write the cross-season correspondence dataset
    "camera": {
        "width": 640,  # image width, pixels
        "height": 480,  # image height, pixels
        "fx": 500.0,  # focal length x, pixels
        "fy": 500.0,  # focal length y, pixels
        "cx": None,  # principal point x in COLMAP convention (pixel centre +0.5), pixels; null = width / 2
        "cy": None,  # principal point y in COLMAP convention, pixels; null = height / 2
        "k1": -0.05,  # OPENCV radial distortion k1 (unitless, normalised coordinates)
        "k2": 0.0,  # OPENCV radial distortion k2
        "p1": 0.0,  # OPENCV tangential distortion p1
        "p2": 0.0,  # OPENCV tangential distortion p2
    },
    "trajectory": {
        "n_database": 30,  # frames of the reference traversal
        "database_spacing_m": 2.0,  # distance between consecutive database frames, metres
        "n_queries": 8,  # frames of each query traversal (one traversal per condition)
        "query_spacing_m": 3.0,  # distance between consecutive query frames, metres
        "speed_mps": 6.0,  # vehicle speed (sets the timestamps), metres per second
        "camera_height_m": 1.8,  # camera height above the ground, metres
        "lane_offset_m": -2.0,  # lateral position of the reference traversal (y), metres (right lane = -y)
        "query_lateral_offset_m": 0.6,  # max |lateral offset| of a query traversal from the reference, metres
        "yaw_offset_deg": -15.0,  # camera yaw relative to the driving direction (negative = to the right), deg
        "query_yaw_jitter_deg": 5.0,  # max |extra yaw| of a query traversal's camera, degrees
        "pitch_deg": -2.0,  # camera pitch (negative = looking down), degrees
        "wander_m": 0.25,  # amplitude of the slow lateral wander along a traversal, metres
        "pose_noise_deg": 0.4,  # per-frame random rotation jitter (std), degrees
    },
    "scene": {
        "road_width_m": 8.0,  # road width (both lanes), metres
        "sidewalk_width_m": 3.0,  # sidewalk width in front of the nearest building front, metres
        "max_setback_m": 2.5,  # building fronts are set back by 0..max_setback_m behind the sidewalk, metres
        "building_width_m": [7.0, 16.0],  # range of building widths along the street, metres
        "building_height_m": [7.0, 22.0],  # range of building heights, metres
        "facade_texels_per_m": 64.0,  # facade texture resolution, texels per metre
        "ground_texels_per_m": 48.0,  # ground texture resolution, texels per metre
        "tree_spacing_m": 14.0,  # mean distance between trees on each sidewalk, metres
        "lamp_spacing_m": 22.0,  # distance between street lamps on each side, metres
    },
    "correspondence": {
        "n_pairs": 2,  # image pairs per condition
        "max_index_offset": 2,  # view j = database index i + offset, |offset| <= this
        "n_points": 1500,  # pixels sampled in image i per pair (those visible in j are kept)
        "depth_tolerance": 0.01,  # occlusion test: relative depth difference allowed in view j
    },
}

_REF_DATE = datetime(2010, 9, 1, 10, 0, tzinfo=timezone.utc)
_COND_DATES = {
    "reference": _REF_DATE,
    "dusk": datetime(2010, 10, 21, 17, 45, tzinfo=timezone.utc),
    "autumn": datetime(2010, 11, 3, 12, 10, tzinfo=timezone.utc),
    "sun": datetime(2011, 4, 10, 14, 0, tzinfo=timezone.utc),
    "snow": datetime(2011, 1, 25, 11, 30, tzinfo=timezone.utc),
    "night": datetime(2010, 12, 20, 20, 15, tzinfo=timezone.utc),
}
_NEAR = 0.05  # near plane, metres


# ----------------------------------------------------------------------------------------------------------
# Camera
# ----------------------------------------------------------------------------------------------------------
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

    def distort(self, xn: np.ndarray, yn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Undistorted normalised coordinates (any shape) -> distorted normalised coordinates."""
        k1, k2, p1, p2 = self.dist
        r2 = xn * xn + yn * yn
        radial = 1 + k1 * r2 + k2 * r2 * r2
        xd = xn * radial + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn)
        yd = yn * radial + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn
        return xd, yd

    def project(self, p_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) camera-frame points -> (N, 2) pixels (integer = pixel centre) and (N,) validity.

        Points behind the near plane or outside the undistortion's valid field of view are invalid (a radial
        model folds far-off points back into the image)."""
        z = p_cam[:, 2]
        valid = z > _NEAR
        zs = np.where(valid, z, 1.0)
        xn, yn = p_cam[:, 0] / zs, p_cam[:, 1] / zs
        valid &= xn * xn + yn * yn < self.max_r2 * 1.1
        xd, yd = self.distort(xn, yn)
        return np.stack([self.fx * xd + self.cx, self.fy * yd + self.cy], axis=1), valid

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
    def max_r2(self) -> float:
        return self._cached("max_r2", lambda: float((self.rays()[..., 0] ** 2 + self.rays()[..., 1] ** 2).max()))

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


# ----------------------------------------------------------------------------------------------------------
# Procedural textures (BGR uint8 drawing with OpenCV, float32 in [0, 1] arithmetic)
# ----------------------------------------------------------------------------------------------------------
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
          cv2.FONT_HERSHEY_COMPLEX_SMALL, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_PLAIN)
_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789&-"))


def _noise(shape: tuple[int, int], rng: np.random.Generator, cells: float, amp: float = 1.0) -> np.ndarray:
    """Smooth value noise in [-amp, amp] with about ``cells`` random values along the longer side."""
    h, w = shape
    s = max(h, w) / max(cells, 1.0)
    gh, gw = max(2, int(math.ceil(h / s)) + 1), max(2, int(math.ceil(w / s)) + 1)
    g = rng.uniform(-amp, amp, size=(gh, gw)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _fractal(shape: tuple[int, int], rng: np.random.Generator, octaves=(4, 16, 64, 256), gain=0.6) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    a = 1.0
    for c in octaves:
        out += _noise(shape, rng, c, a)
        a *= gain
    return out / sum(gain ** i for i in range(len(octaves)))


def _rand_color(rng, base=None, spread=0.15, lo=0.05, hi=0.95) -> tuple:
    c = rng.uniform(lo, hi, 3) if base is None else np.asarray(base) + rng.uniform(-spread, spread, 3)
    return tuple(float(x) for x in np.clip(c, 0, 1))


def _rand_text(rng, n_lo=3, n_hi=9) -> str:
    return "".join(rng.choice(_ALPHABET, size=int(rng.integers(n_lo, n_hi + 1))))


def _put_text_box(img, text, x0, y0, x1, y1, color, rng, thickness=None):
    """Draw ``text`` scaled to fill the box (x0, y0)-(x1, y1) (texels)."""
    font = int(rng.choice(_FONTS))
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = min((x1 - x0) / max(tw, 1), (y1 - y0) / max(th, 1)) * 0.9
    if scale <= 0.05:
        return
    th_px = thickness or max(1, int(scale * rng.uniform(1.2, 2.5)))
    (tw, th), base = cv2.getTextSize(text, font, scale, th_px)
    bx0, by0 = int(math.floor(min(x0, x1))), int(math.floor(min(y0, y1)))
    bw, bh = int(math.ceil(abs(x1 - x0))) + 1, int(math.ceil(abs(y1 - y0))) + base + 1
    mask = np.zeros((bh, bw), np.uint8)  # OpenCV >= 5 draws text on 8-bit images only
    cv2.putText(mask, text, (int((bw - tw) / 2), int((bh - base + th) / 2)), font, scale, 255, th_px, cv2.LINE_AA)
    H, W = img.shape[:2]
    ya, yb, xa, xb = max(by0, 0), min(by0 + bh, H), max(bx0, 0), min(bx0 + bw, W)
    if ya >= yb or xa >= xb:
        return
    a = (mask[ya - by0:yb - by0, xa - bx0:xb - bx0].astype(np.float32) / 255)[..., None]
    region = img[ya:yb, xa:xb].astype(np.float32)
    scale_c = 255.0 if img.dtype == np.uint8 else 1.0
    img[ya:yb, xa:xb] = (region * (1 - a) + np.array(color, np.float32) * scale_c * a).astype(img.dtype)


def _poster(img, lab, x0, y0, x1, y1, rng):
    """A random poster: background, shapes, lines of text; class 7."""
    cv2.rectangle(img, (x0, y0), (x1, y1), _rand_color(rng), -1)
    w, h = x1 - x0, y1 - y0
    for _ in range(int(rng.integers(3, 9))):
        kind = rng.integers(3)
        c = _rand_color(rng)
        if kind == 0:
            cv2.circle(img, (int(x0 + rng.uniform(0, w)), int(y0 + rng.uniform(0, h))),
                       int(rng.uniform(0.05, 0.3) * min(w, h)), c, -1, cv2.LINE_AA)
        elif kind == 1:
            a, b = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
            cv2.rectangle(img, (int(x0 + a[0] * w), int(y0 + a[1] * h)), (int(x0 + b[0] * w), int(y0 + b[1] * h)), c, -1)
        else:
            pts = np.stack([x0 + rng.uniform(0, w, 4), y0 + rng.uniform(0, h, 4)], 1).astype(np.int32)
            cv2.fillPoly(img, [pts], c, cv2.LINE_AA)
    n_lines = int(rng.integers(1, 4))
    for k in range(n_lines):
        ya = y0 + h * (0.1 + 0.8 * k / n_lines)
        _put_text_box(img, _rand_text(rng), x0 + 0.05 * w, ya, x1 - 0.05 * w, ya + 0.8 * h / n_lines,
                      _rand_color(rng), rng)
    cv2.rectangle(lab, (x0, y0), (x1, y1), 7, -1)


def _wall_material(h: int, w: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float32 wall albedo: bricks, plaster or stone blocks, with weathering."""
    style = rng.choice(["brick", "brick", "plaster", "stone"])
    v1 = np.arange(h, dtype=np.float32)
    u1 = np.arange(w, dtype=np.float32)
    if style in ("brick", "stone"):
        if style == "brick":
            base = np.array(rng.choice([[0.25, 0.3, 0.6], [0.3, 0.35, 0.55], [0.45, 0.5, 0.6], [0.2, 0.25, 0.45]]))
            bw, bh = 0.25 * rho, 0.08 * rho
        else:
            base = np.array(_rand_color(rng, [0.6, 0.62, 0.62], 0.15))
            bw, bh = rng.uniform(0.4, 0.8) * rho, rng.uniform(0.25, 0.4) * rho
        rows = np.floor(v1 / bh).astype(np.int32)  # (h,)
        offs = ((rows % 2) * 0.5 + (rows % 7) * 0.13 if style == "brick" else (rows * 0.37) % 1.0) * bw
        uo = u1[None, :] + offs[:, None].astype(np.float32)  # (h, w)
        cols = np.floor(uo * (1 / bw)).astype(np.int32)
        ncols = int(w // bw) + 3
        pal = np.clip(base + rng.normal(0, 0.06 if style == "brick" else 0.02, size=(int(rows.max()) + 1, ncols, 3)), 0, 1)
        pal *= rng.uniform(0.75, 1.2, size=pal.shape[:2] + (1,))
        pal = pal.astype(np.float32).reshape(-1, 3)
        img = np.take(pal, rows[:, None] * ncols + cols, axis=0)
        fv = ((v1 % bh) / bh)[:, None]
        fu = uo * (1 / bw) - cols
        if style == "brick":
            mortar = (fv < 0.16) | (fu < 0.05)
            img[mortar] = np.float32(0.62)
        else:
            edge = np.minimum(np.minimum(fv, 1 - fv) * bh, np.minimum(fu, 1 - fu) * bw)
            img *= np.clip(0.55 + edge / (0.03 * rho), 0.55, 1.0)[..., None]
    else:
        base = np.array(_rand_color(rng, rng.choice([[0.55, 0.7, 0.8], [0.7, 0.75, 0.75], [0.5, 0.6, 0.75],
                                                      [0.65, 0.55, 0.45]]), 0.08))
        img = np.empty((h, w, 3), np.float32)
        img[:] = base.astype(np.float32)
    mod = 1 + 0.25 * _fractal((h, w), rng, (3, 12, 40))  # stains
    mod += 0.08 * rng.standard_normal((h, w), dtype=np.float32)  # grain
    mod += 0.12 * cv2.resize(rng.uniform(-1, 1, size=(4, max(2, w // 6))).astype(np.float32), (w, h),
                             interpolation=cv2.INTER_LINEAR)  # vertical streaks
    if style == "plaster":  # blotchy render: dirt, patches of repair, moss at mid frequencies
        mod += 0.12 * _noise((h, w), rng, max(h, w) / (0.5 * rho))
        mod += 0.22 * _fractal((h, w), rng, (max(h, w) / (0.6 * rho), max(h, w) / (0.2 * rho)), 0.7)
    img *= mod[..., None]
    return np.clip(img, 0, 1, out=img)


def _window(img, lab, glass, gid, x0, y0, x1, y1, frame_c, rng, shop=False):
    """One window with frame, glass (gradient, reflections, curtains), muntins; class 4, glass id ``gid``."""
    w, h = x1 - x0, y1 - y0
    ft = max(2, int(0.07 * min(w, h) if not shop else 0.04 * min(w, h)))
    cv2.rectangle(img, (x0, y0), (x1, y1), frame_c, -1)
    gx0, gy0, gx1, gy1 = x0 + ft, y0 + ft, x1 - ft, y1 - ft
    if gx1 <= gx0 + 2 or gy1 <= gy0 + 2:
        return
    gh, gw = gy1 - gy0, gx1 - gx0
    top, bot = np.array(_rand_color(rng, [0.35, 0.28, 0.22], 0.1)), np.array(_rand_color(rng, [0.12, 0.1, 0.08], 0.05))
    t = np.linspace(0, 1, gh, dtype=np.float32)[:, None, None]
    pane = (top * (1 - t) + bot * t) * np.ones((1, gw, 1), np.float32)
    # slanted reflection band
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    a = rng.uniform(-1.5, 1.5)
    d = (xx - a * yy) / max(gw, 1) - rng.uniform(-0.5, 1.0)
    pane += (0.25 * np.exp(-(d / rng.uniform(0.05, 0.2)) ** 2))[..., None].astype(np.float32)
    if shop:  # display items
        for _ in range(int(rng.integers(4, 12))):
            c = _rand_color(rng)
            px, py = int(rng.uniform(0, gw)), int(rng.uniform(0.3, 1.0) * gh)
            s = int(rng.uniform(0.04, 0.15) * gw) + 2
            if rng.random() < 0.5:
                cv2.rectangle(pane, (px, py), (px + s, py - int(s * rng.uniform(0.5, 2))), c, -1)
            else:
                cv2.circle(pane, (px, py), s // 2, c, -1, cv2.LINE_AA)
        if rng.random() < 0.7:
            _put_text_box(pane, _rand_text(rng, 2, 6), 0.1 * gw, 0.05 * gh, 0.9 * gw, 0.25 * gh, _rand_color(rng), rng)
    elif rng.random() < 0.6:  # curtains
        c = np.array(_rand_color(rng, [0.75, 0.75, 0.75], 0.2))
        cw = int(gw * rng.uniform(0.2, 0.5))
        folds = (0.85 + 0.15 * np.sin(xx[:, :cw] * rng.uniform(0.5, 1.2)))[..., None]
        side = rng.integers(3)
        if side == 0:
            pane[:, :cw] = c * folds
        elif side == 1:
            pane[:, gw - cw:] = c * folds
        else:
            pane[: gh // 3] = c * (0.85 + 0.15 * np.sin(xx[: gh // 3] * 0.8))[..., None]
    if rng.random() < 0.15:  # a plant or a sticker
        cv2.circle(pane, (int(rng.uniform(0.2, 0.8) * gw), int(gh * 0.9)), max(2, gw // 8), _rand_color(rng, [0.1, 0.5, 0.15], 0.1), -1)
    img[gy0:gy1, gx0:gx1] = np.clip(pane, 0, 1)
    glass[gy0:gy1, gx0:gx1] = gid
    if not shop:  # muntins
        mt = max(1, ft // 2)
        cv2.line(img, ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1), frame_c, mt)
        if rng.random() < 0.6:
            ym = y0 + int(h * rng.uniform(0.25, 0.4))
            cv2.line(img, (x0, ym), (x1, ym), frame_c, mt)
    cv2.rectangle(lab, (x0, y0), (x1, y1), 4, -1)


def _facade_texture(width_m: float, height_m: float, rho: float, rng: np.random.Generator):
    """Facade of a building: (H, W, 3) uint8 BGR albedo, (H, W) uint8 labels, (H, W) uint8 glass ids."""
    w, h = max(8, int(round(width_m * rho))), max(8, int(round(height_m * rho)))
    img = _wall_material(h, w, rho, rng)
    lab = np.full((h, w), 3, np.uint8)
    glass = np.zeros((h, w), np.uint8)
    frame_c = _rand_color(rng, rng.choice([[0.9, 0.9, 0.9], [0.15, 0.15, 0.15], [0.3, 0.45, 0.2], [0.2, 0.3, 0.5]]), 0.05)
    gf = rng.uniform(3.6, 4.5)
    fh = rng.uniform(2.9, 3.4)
    n_floors = max(0, int((height_m - gf - 0.6) / fh))
    ww, wh = rng.uniform(0.9, 1.3), rng.uniform(1.3, 1.7)
    n_win = max(1, int(width_m / rng.uniform(2.0, 3.0)))
    pitch = width_m / n_win
    gid = 1
    shutters = rng.random() < 0.3
    cornice_c = _rand_color(rng, [0.8, 0.8, 0.8], 0.1)
    for f in range(n_floors):
        z_floor = gf + f * fh  # from the ground, metres
        yc = h - (z_floor + 0.9) * rho  # sill row
        cv2.rectangle(img, (0, int(h - z_floor * rho)), (w, int(h - z_floor * rho + 0.12 * rho)), cornice_c, -1)
        for k in range(n_win):
            if rng.random() < 0.05:
                continue
            xc = (k + 0.5) * pitch * rho
            x0, x1 = int(xc - ww * rho / 2), int(xc + ww * rho / 2)
            y1, y0 = int(yc), int(yc - wh * rho)
            if y0 < 2:
                continue
            _window(img, lab, glass, gid, x0, y0, x1, y1, frame_c, rng)
            gid = gid % 250 + 1
            cv2.rectangle(img, (x0 - 4, y1), (x1 + 4, y1 + max(2, int(0.06 * rho))), cornice_c, -1)  # sill
            if shutters:
                sc = _rand_color(rng, [0.2, 0.5, 0.3], 0.1)
                for sx0 in (x0 - int(0.45 * ww * rho), x1):
                    sx1 = sx0 + int(0.45 * ww * rho)
                    cv2.rectangle(img, (sx0, y0), (sx1, y1), sc, -1)
                    for yy in range(y0, y1, max(3, int(0.05 * rho))):
                        cv2.line(img, (sx0, yy), (sx1, yy), tuple(0.6 * np.array(sc)), 1)
                    cv2.rectangle(lab, (sx0, y0), (sx1, y1), 4, -1)
            if rng.random() < 0.05:  # satellite dish / sign / flower box
                cv2.rectangle(img, (x0, y1 - 6), (x1, y1 + int(0.2 * rho)), _rand_color(rng), -1)
    # ground floor: doors, shop windows, a sign band, posters, graffiti
    z_band = gf - 0.9
    x = rng.uniform(0.2, 1.0)
    while x < width_m - 1.0:
        kind = rng.choice(["door", "shop", "shop", "wall"])
        if kind == "door":
            dw = rng.uniform(1.0, 1.8)
            if x + dw > width_m - 0.2:
                break
            x0, x1, y0, y1 = int(x * rho), int((x + dw) * rho), int(h - 2.3 * rho), h - 1
            dc = _rand_color(rng)
            cv2.rectangle(img, (x0, y0), (x1, y1), dc, -1)
            for p in range(int(rng.integers(1, 4))):
                py0 = y0 + int((p + 0.2) * (y1 - y0) / 3)
                cv2.rectangle(img, (x0 + 6, py0), (x1 - 6, py0 + int((y1 - y0) / 4)), tuple(0.7 * np.array(dc)), 2)
            cv2.circle(img, (x1 - 10, int(h - 1.05 * rho)), 3, (0.7, 0.8, 0.85), -1)
            cv2.rectangle(img, (x0 + 4, y0 - int(0.3 * rho)), (x0 + int(0.35 * rho), y0 - 4), (0.9, 0.9, 0.9), -1)
            _put_text_box(img, str(int(rng.integers(1, 200))), x0 + 6, y0 - int(0.28 * rho), x0 + int(0.33 * rho), y0 - 6,
                          (0.1, 0.1, 0.1), rng, 1)
            cv2.rectangle(lab, (x0, y0), (x1, y1), 5, -1)
            x += dw + rng.uniform(0.4, 1.2)
        elif kind == "shop":
            sw = rng.uniform(1.5, 4.0)
            if x + sw > width_m - 0.2:
                sw = width_m - 0.2 - x
                if sw < 1.0:
                    break
            x0, x1 = int(x * rho), int((x + sw) * rho)
            _window(img, lab, glass, gid, x0, int(h - (z_band - 0.1) * rho), x1, int(h - 0.5 * rho), frame_c, rng, shop=True)
            gid = gid % 250 + 1
            if rng.random() < 0.8:  # shop sign above
                y0, y1 = int(h - (z_band + 0.75) * rho), int(h - (z_band + 0.1) * rho)
                bg = _rand_color(rng)
                cv2.rectangle(img, (x0, y0), (x1, y1), bg, -1)
                fg = tuple(float(c) for c in (1 - np.array(bg)) * rng.uniform(0.7, 1.0))
                _put_text_box(img, _rand_text(rng), x0 + 4, y0 + 3, x1 - 4, y1 - 3, fg, rng)
                cv2.rectangle(lab, (x0, y0), (x1, y1), 7, -1)
            x += sw + rng.uniform(0.3, 1.0)
        else:
            pw = rng.uniform(0.5, 1.0)
            if x + pw < width_m - 0.2 and rng.random() < 0.7:
                ph = pw * rng.uniform(1.2, 1.6)
                zb = rng.uniform(0.8, 1.3)
                _poster(img, lab, int(x * rho), int(h - (zb + ph) * rho), int((x + pw) * rho), int(h - zb * rho), rng)
            x += pw + rng.uniform(0.5, 1.5)
    for _ in range(int(rng.integers(0, 4))):  # graffiti on the lower wall (stays class "wall")
        pts = np.stack([rng.uniform(0, w, 6), h - rng.uniform(0.2, 2.0, 6) * rho], 1).astype(np.int32)
        cv2.polylines(img, [pts], False, _rand_color(rng, lo=0.2, hi=1.0), int(rng.integers(3, 9)), cv2.LINE_AA)
    if rng.random() < 0.6:  # drain pipe
        xp = int(rng.uniform(0, w))
        cv2.rectangle(img, (xp, 0), (xp + int(0.1 * rho), h), _rand_color(rng, [0.4, 0.4, 0.4], 0.1), -1)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), lab, glass


def _plain_texture(width_m, height_m, rho, rng, base, label, pattern="noise"):
    """Texture for side walls, trunks, poles, lamp heads and canopies."""
    w, h = max(4, int(round(width_m * rho))), max(4, int(round(height_m * rho)))
    if pattern == "wall":
        img = _wall_material(h, w, rho, rng)
        for _ in range(int(rng.integers(0, 3))):
            pts = np.stack([rng.uniform(0, w, 5), h - rng.uniform(0.2, 2.2, 5) * rho], 1).astype(np.int32)
            cv2.polylines(img, [pts], False, _rand_color(rng, lo=0.2), int(rng.integers(3, 8)), cv2.LINE_AA)
        if rng.random() < 0.5 and w > 0.8 * rho:
            pw = min(0.7, width_m * 0.6)
            x0 = int(rng.uniform(0, w - pw * rho))
            lab = np.full((h, w), label, np.uint8)
            _poster(img, lab, x0, int(h - 2.1 * rho), x0 + int(pw * rho), int(h - 1.0 * rho), rng)
            return (np.clip(img, 0, 1) * 255).astype(np.uint8), lab, None
    elif pattern == "leaves":  # clumps of leaves: high-frequency blobs with dark gaps, per-clump shade
        hi = _noise((h, w), rng, max(h, w) / 3.0) + 0.5 * _noise((h, w), rng, max(h, w) / 1.5)
        shade = 0.8 + 0.5 * _noise((h, w), rng, max(h, w) / 8.0)
        a = np.clip((hi + 0.2) * 2.5, 0.15, 1.0) * shade
        hue = _noise((h, w), rng, max(h, w) / 5.0, 0.12)
        img = (np.array(base, np.float32) * a[..., None]) * (1 + np.stack([hue, -hue, 0.5 * hue], -1))
    else:
        img = np.broadcast_to(np.array(base, np.float32), (h, w, 3)).copy()
        img *= (1 + 0.3 * _fractal((h, w), rng, (2, 8, 32)))[..., None]
        img *= (1 + 0.1 * rng.standard_normal((h, w), dtype=np.float32))[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), np.full((h, w), label, np.uint8), None


# ----------------------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Face:
    """An axis-aligned textured rectangle.

    Attributes:
        axis: index of the normal axis (0 x, 1 y, 2 z); ``sign``: +1/-1, the outward normal is sign * e_axis.
        plane: the face's coordinate along ``axis``, metres.
        bounds: {other axis: (lo, hi)} metres.
        u_axis, u_sign, u_origin / v_axis, v_sign, v_origin: texture coordinates in metres,
            u_m = u_sign * (p[u_axis] - u_origin) (likewise v), both in [0, size].
        rho: texels per metre. mips: albedo pyramid, (H, W, 3) uint8 BGR per level.
        labels: (H, W) uint8 class ids; glass: (H, W) uint8 window ids (0 = none) or None.
        kind: "ground", "facade", "wall", "veg", "veg_top", "pole", "lamp".
    """

    axis: int
    sign: int
    plane: float
    bounds: dict
    u_axis: int
    u_sign: int
    u_origin: float
    v_axis: int
    v_sign: int
    v_origin: float
    rho: float
    tex_fn: Any = field(repr=False)
    seed: int
    kind: str
    _tex: tuple | None = field(default=None, repr=False)

    def _textures(self) -> tuple:
        if self._tex is None:  # generated on first use, from the face's own seed (order independent)
            (ulo, uhi), (vlo, vhi) = self.bounds[self.u_axis], self.bounds[self.v_axis]
            tex, lab, glass = self.tex_fn(uhi - ulo, vhi - vlo, np.random.default_rng(self.seed))
            self._tex = (_mips(tex), lab, glass)
        return self._tex

    @property
    def mips(self) -> list:
        return self._textures()[0]

    @property
    def labels(self) -> np.ndarray:
        return self._textures()[1]

    @property
    def glass(self) -> np.ndarray | None:
        return self._textures()[2]

    @property
    def normal(self) -> np.ndarray:
        n = np.zeros(3)
        n[self.axis] = self.sign
        return n

    def corners(self) -> np.ndarray:
        (a, (alo, ahi)), (b, (blo, bhi)) = sorted(self.bounds.items())
        out = np.zeros((4, 3))
        out[:, self.axis] = self.plane
        out[:, a] = [alo, ahi, ahi, alo]
        out[:, b] = [blo, blo, bhi, bhi]
        return out


def _mips(tex: np.ndarray, levels: int = 5) -> list:
    out = [tex]
    while len(out) < levels and min(out[-1].shape[:2]) >= 16:
        out.append(cv2.pyrDown(out[-1]))
    return out


def _make_face(axis, sign, plane, bounds, rho, tex_fn, kind, rng) -> Face:
    """Build a face; the texture is oriented so that it reads correctly from outside (v down = -z)."""
    n = np.zeros(3)
    n[axis] = sign
    others = [k for k in range(3) if k != axis]
    if axis == 2:  # horizontal: u along +x, v along -y
        u_axis, u_sign, v_axis, v_sign = 0, 1, 1, -1
    else:
        r = np.cross(-n, [0, 0, 1.0])
        u_axis = int(np.argmax(np.abs(r)))
        u_sign = int(np.sign(r[u_axis]))
        v_axis, v_sign = 2, -1
    assert set([u_axis, v_axis]) == set(others)
    (ulo, uhi), (vlo, vhi) = bounds[u_axis], bounds[v_axis]
    u_origin = ulo if u_sign > 0 else uhi
    v_origin = vlo if v_sign > 0 else vhi
    return Face(axis, sign, float(plane), {k: (float(bounds[k][0]), float(bounds[k][1])) for k in others},
                u_axis, u_sign, float(u_origin), v_axis, v_sign, float(v_origin), float(rho), tex_fn,
                int(rng.integers(1 << 62)), kind)


def _box_faces(lo, hi, rho, tex_fns: dict, kind_of: dict, rng, skip=()) -> list:
    """Faces of the box [lo, hi] (3-vectors); ``tex_fns[(axis, sign)]`` makes each face's texture."""
    faces = []
    for axis in range(3):
        for sign in (-1, 1):
            if (axis, sign) in skip:
                continue
            bounds = {k: (lo[k], hi[k]) for k in range(3) if k != axis}
            plane = hi[axis] if sign > 0 else lo[axis]
            fn = tex_fns.get((axis, sign), tex_fns.get("default"))
            faces.append(_make_face(axis, sign, plane, bounds, rho[(axis, sign)] if isinstance(rho, dict) else rho,
                                    fn, kind_of.get((axis, sign), kind_of.get("default")), rng))
    return faces


@dataclass
class Scene:
    """A generated street: faces, lights and a sky panorama (see the module docstring).

    Attributes:
        faces: textured axis-aligned rectangles.
        lamps: (L, 3) street-lamp light positions, metres.
        sky: (Hs, Ws) float32 cloud field over (elevation 90..0 deg, azimuth -180..180 deg).
        x_range: (x_min, x_max) of the street, metres. half_width: half the distance between building backs.
        seed: the slice's seed (condition effects derive their generators from it).
        building_fronts: (side, x0, x1, y_front, height) per street-side building, metres (side +1: y > 0).
        road_half_width_m: half the road width, metres.
        casters: (K, 2, 3) boxes (min, max corner) that cast sun shadows on the ground, metres.
    """

    faces: list
    lamps: np.ndarray
    sky: np.ndarray
    x_range: tuple
    half_width: float
    seed: int
    building_fronts: list = field(default_factory=list)
    road_half_width_m: float = 4.0
    casters: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3)))
    _variants: dict = field(default_factory=dict, repr=False)
    _boxes: np.ndarray | None = field(default=None, repr=False)

    @property
    def face_boxes(self) -> np.ndarray:
        """(F, 2, 3) axis-aligned bounds (min, max corner) of the faces, metres."""
        if self._boxes is None:
            self._boxes = np.array([[f.corners().min(0), f.corners().max(0)] for f in self.faces]).reshape(-1, 2, 3)
        return self._boxes


def _ground_tile(x0, x1, y_half, rho, sc, objs, coarse, rng):
    """Ground texture for x in [x0, x1], y in [-y_half, y_half]: road, curb, sidewalks, markings."""
    w, h = int(round((x1 - x0) * rho)), int(round(2 * y_half * rho))
    # texel (col, row) centre -> metric (x, y); v axis = -y
    xs = x0 + (np.arange(w, dtype=np.float32) + 0.5) / rho  # (w,)
    ys = y_half - (np.arange(h, dtype=np.float32) + 0.5) / rho  # (h,)
    ay = np.abs(ys)
    half_road = sc.road_width_m / 2
    # seamless large-scale noise from global coarse grids
    hq, wq = (h + 3) // 4, (w + 3) // 4  # smooth: evaluate at 1/4 resolution, then upsample
    xq, yq = xs[::4][:wq], ys[::4][:hq]
    g_noise = np.zeros((hq, wq), np.float32)
    for grid, cell, gx0 in coarse:
        mx = np.broadcast_to(((xq - gx0) / cell)[None, :], (hq, wq)).astype(np.float32)
        my = np.broadcast_to(((yq + y_half) / cell)[:, None], (hq, wq)).astype(np.float32)
        g_noise += cv2.remap(grid, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    g_noise = cv2.resize(g_noise, (wq * 4, hq * 4), interpolation=cv2.INTER_LINEAR)[:h, :w]
    road = (ay < half_road)[:, None]  # (h, 1)
    curb = ((ay >= half_road) & (ay < half_road + 0.18))[:, None]
    lab = np.ascontiguousarray(np.broadcast_to(np.where(road, 1, 2).astype(np.uint8), (h, w)))
    grain = 0.05 * rng.standard_normal((h, w), dtype=np.float32)
    # asphalt
    asph = 0.32 + 0.06 * g_noise + grain
    asph += 0.18 * (rng.random((h, w), dtype=np.float32) > 0.985)  # aggregate
    # sidewalk slabs, 0.5 m, rows offset, per-slab shade from a hash of the global slab index
    slab = 0.5
    rows = np.floor((ay - half_road) / slab).astype(np.int64)  # (h,)
    row_off = ((rows * 0.618) % 1.0 * slab).astype(np.float32)
    xo = xs[None, :] + row_off[:, None] + 1000.0  # (h, w)
    cols = (xo // slab).astype(np.int64)
    hsh = ((rows[:, None] * 73856093) ^ (cols * 19349663) ^ (np.where(ys > 0, 1, 2)[:, None] * 83492791)) % 1000003
    side = (0.40 + 0.3 * (hsh % 1000).astype(np.float32) / 1000.0) + 0.04 * g_noise + grain
    gap = ((xo % slab) < 0.03 * slab) | (((ay - half_road) % slab) < 0.03 * slab)[:, None]
    side[gap] = 0.3
    grey = np.where(road, asph, side)
    grey = np.where(curb, 0.7 + 0.8 * grain, grey)
    tint = np.where(road, np.array([1.0, 1.0, 0.98], np.float32), np.array([0.92, 0.97, 1.02], np.float32))  # (h, 3)
    img = grey[..., None] * tint[:, None, :]

    def px(x, y):  # metres -> texel coordinates (int) in this tile
        return int(round((x - x0) * rho)), int(round((y_half - y) * rho))

    for o in objs:  # global object list, clipped by OpenCV at the tile border
        t = o["type"]
        if t == "dash":
            cv2.rectangle(img, px(o["x0"], o["y0"]), px(o["x1"], o["y1"]), (0.85, 0.88, 0.9), -1)
            cv2.rectangle(lab, px(o["x0"], o["y0"]), px(o["x1"], o["y1"]), 8, -1)
        elif t == "text":
            p0, p1 = px(o["x0"], o["y0"]), px(o["x1"], o["y1"])
            sub_img = np.zeros((abs(p1[1] - p0[1]) + 1, abs(p1[0] - p0[0]) + 1, 3), np.float32)
            _put_text_box(sub_img, o["text"], 0, 0, sub_img.shape[1], sub_img.shape[0], (1, 1, 1), np.random.default_rng(o["seed"]))
            m = sub_img[..., 0] > 0.5
            ya, xa = min(p0[1], p1[1]), min(p0[0], p1[0])
            yy, xx = np.nonzero(m)
            yy, xx = yy + ya, xx + xa
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            img[yy[ok], xx[ok]] = (0.85, 0.88, 0.9)
            lab[yy[ok], xx[ok]] = 8
        elif t == "patch":
            cv2.rectangle(img, px(o["x0"], o["y0"]), px(o["x1"], o["y1"]), (o["g"],) * 3, -1)
            cv2.rectangle(img, px(o["x0"], o["y0"]), px(o["x1"], o["y1"]), (0.15, 0.15, 0.15), 2)
        elif t == "stain":
            cv2.ellipse(img, px(o["x"], o["y"]), (int(o["a"] * rho), int(o["b"] * rho)), o["ang"], 0, 360,
                        (o["g"],) * 3, -1, cv2.LINE_AA)
        elif t == "crack":
            pts = np.array([px(x, y) for x, y in o["pts"]], np.int32)
            cv2.polylines(img, [pts], False, (0.12, 0.12, 0.12), 2, cv2.LINE_AA)
        elif t == "manhole":
            c, r = px(o["x"], o["y"]), int(o["r"] * rho)
            cv2.circle(img, c, r, (0.25, 0.27, 0.3), -1, cv2.LINE_AA)
            cv2.circle(img, c, r, (0.1, 0.1, 0.1), 3, cv2.LINE_AA)
            for k in range(-3, 4):
                cv2.line(img, (c[0] + k * r // 4, c[1] - r + 4), (c[0] + k * r // 4, c[1] + r - 4), (0.45, 0.45, 0.45), 2)
        elif t == "gum":
            cv2.circle(img, px(o["x"], o["y"]), max(1, int(o["r"] * rho)), (o["g"],) * 3, -1, cv2.LINE_AA)
    img *= (1 + 0.05 * rng.standard_normal((h, w), dtype=np.float32))[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), lab, None


def build_scene(sc: Any, x_range: tuple[float, float], seed: int) -> Scene:
    """Generate the street of one slice.

    Args:
        sc: the ``scene`` group of the configuration.
        x_range: (x_min, x_max) extent of the street along x, metres.
        seed: integer seed; the same seed gives the same scene.
    Returns:
        The scene (faces with textures, lamp positions, sky panorama).
    """
    rng = np.random.default_rng([seed, 101])
    x_min, x_max = float(x_range[0]), float(x_range[1])
    half_road = sc.road_width_m / 2
    y_front0 = half_road + sc.sidewalk_width_m
    y_back = y_front0 + sc.max_setback_m + 2.0
    frho, grho = float(sc.facade_texels_per_m), float(sc.ground_texels_per_m)
    faces: list[Face] = []
    fronts = []
    casters = []  # boxes that cast sun shadows onto the ground
    # buildings on both sides (side = +1: y > 0)
    for side in (1, -1):
        x = x_min
        while x < x_max:
            bw = float(rng.uniform(*sc.building_width_m))
            x1 = min(x + bw, x_max)
            if x_max - x1 < 3.0:
                x1 = x_max
            setback = float(rng.uniform(0, sc.max_setback_m)) if rng.random() < 0.7 else 0.0
            yf = y_front0 + setback
            hgt = float(rng.uniform(*sc.building_height_m))
            lo = np.array([x, yf if side > 0 else -y_back, 0.0])
            hi = np.array([x1, y_back if side > 0 else -yf, hgt])
            front = (1, -side)
            fns = {front: lambda wm, hm, r: _facade_texture(wm, hm, frho, r),
                   "default": lambda wm, hm, r: _plain_texture(wm, hm, frho / 2, r, None, 3, "wall")}
            rhos = {(a, s): (frho if (a, s) == front else frho / 2) for a in range(3) for s in (-1, 1)}
            skip = [(2, -1), (2, 1), (1, side)]  # bottom, top (never seen from the street), back
            faces += _box_faces(lo, hi, rhos, fns, {front: "facade", "default": "wall"}, rng, skip=skip)
            casters.append((lo, hi))
            fronts.append((side, x, x1, yf, hgt))
            x = x1
    # closing buildings across both ends
    for end, sgn in ((x_max, -1), (x_min, 1)):
        lo = np.array([end if sgn < 0 else end - 5, -y_back, 0.0])
        hi = np.array([end + 5 if sgn < 0 else end, y_back, float(rng.uniform(10, 20))])
        fns = {(0, sgn): lambda wm, hm, r: _facade_texture(wm, hm, frho / 2, r)}
        casters.append((lo, hi))
        faces += _box_faces(lo, hi, frho / 2, fns, {"default": "facade"}, rng,
                            skip=[(a, s) for a in range(3) for s in (-1, 1) if (a, s) != (0, sgn)])
    # trees and lamps on the sidewalks, near the curb
    lamps = []
    for side in (1, -1):
        x = x_min + rng.uniform(2, sc.tree_spacing_m)
        while x < x_max - 2:
            yc = side * (half_road + 0.9)
            r_t, th = 0.15, float(rng.uniform(2.6, 3.4))
            casters.append((np.array([x - r_t, yc - r_t, 0]), np.array([x + r_t, yc + r_t, th])))
            faces += _box_faces(np.array([x - r_t, yc - r_t, 0]), np.array([x + r_t, yc + r_t, th]), 32.0,
                                {"default": lambda wm, hm, r: _plain_texture(wm, hm, 32.0, r, (0.2, 0.28, 0.33), 9)},
                                {"default": "pole"}, rng, skip=[(2, -1), (2, 1)])
            cs = float(rng.uniform(1.0, 1.5))
            base = _rand_color(rng, [0.15, 0.45, 0.2], 0.08)
            c_lo, c_hi = np.array([x - cs, yc - cs, th - 0.3]), np.array([x + cs, yc + cs, th + rng.uniform(1.8, 2.8)])
            casters.append((c_lo, c_hi))
            faces += _box_faces(c_lo, c_hi,
                                32.0, {"default": lambda wm, hm, r, b=base: _plain_texture(wm, hm, 32.0, r, b, 6, "leaves")},
                                {"default": "veg", (2, 1): "veg_top"}, rng)
            x += float(rng.uniform(0.6, 1.4) * sc.tree_spacing_m)
        x = x_min + rng.uniform(2, sc.lamp_spacing_m) + (sc.lamp_spacing_m / 2 if side < 0 else 0)
        while x < x_max - 2:
            yc = side * (half_road + 0.4)
            ph = 6.0
            casters.append((np.array([x - 0.08, yc - 0.08, 0]), np.array([x + 0.08, yc + 0.08, ph])))
            faces += _box_faces(np.array([x - 0.08, yc - 0.08, 0]), np.array([x + 0.08, yc + 0.08, ph]), 32.0,
                                {"default": lambda wm, hm, r: _plain_texture(wm, hm, 32.0, r, (0.35, 0.35, 0.33), 9)},
                                {"default": "pole"}, rng, skip=[(2, -1)])
            arm_y = yc - side * 1.2
            lo, hi = np.array([x - 0.25, min(yc, arm_y), ph - 0.25]), np.array([x + 0.25, max(yc, arm_y), ph])
            faces += _box_faces(lo, hi, 32.0, {"default": lambda wm, hm, r: _plain_texture(wm, hm, 32.0, r, (0.3, 0.3, 0.3), 9)},
                                {"default": "pole", (2, -1): "lamp"}, rng)
            lamps.append([x, arm_y, ph - 0.35])
            x += sc.lamp_spacing_m
    # ground tiles (seamless large-scale noise from global coarse grids)
    y_half = y_back
    coarse = []
    for cell in (6.0, 1.5, 0.4):
        gw = int((x_max - x_min) / cell) + 4
        gh = int(2 * y_half / cell) + 4
        coarse.append((rng.uniform(-1, 1, size=(gh, gw)).astype(np.float32) / (1 + (cell < 1)), cell, x_min))
    objs = _ground_objects(x_min, x_max, y_half, sc, rng)
    tile = 40.0
    x = x_min
    while x < x_max - 1e-6:
        x1 = min(x + tile, x_max)
        faces.append(_make_face(2, 1, 0.0, {0: (x, x1), 1: (-y_half, y_half)}, grho,
                                lambda wm, hm, r, a=x, b=x1: _ground_tile(a, b, y_half, grho, sc, objs, coarse, r),
                                "ground", rng))
        x = x1
    # sky panorama: clouds over elevation 90..0 (rows) x azimuth -180..180 (cols)
    sky = np.clip(0.5 + 0.6 * _fractal((256, 1024), rng, (6, 24, 96)), 0, 1)
    ramp = np.linspace(0, 1, 64, dtype=np.float32)
    sky[:, -64:] = sky[:, -64:] * (1 - ramp) + sky[:, :1] * ramp  # no seam at azimuth +-180 deg
    return Scene(faces, np.array(lamps, dtype=np.float64).reshape(-1, 3), sky, (x_min, x_max), y_half,
                 int(seed), fronts, float(half_road), np.array(casters, dtype=np.float64).reshape(-1, 2, 3))


def _ground_objects(x_min, x_max, y_half, sc, rng) -> list:
    """Road markings, patches, stains, cracks, manholes on the ground, in world metres."""
    half_road = sc.road_width_m / 2
    objs = []
    x = x_min + rng.uniform(0, 6)
    while x < x_max:  # dashed centre line
        objs.append(dict(type="dash", x0=x, x1=x + 3.0, y0=0.07, y1=-0.07))
        x += 9.0
    for s in (1, -1):  # edge lines with gaps
        x = x_min
        while x < x_max:
            ln = rng.uniform(15, 40)
            objs.append(dict(type="dash", x0=x, x1=x + ln, y0=s * (half_road - 0.3), y1=s * (half_road - 0.42)))
            x += ln + rng.uniform(2, 8)
    x = x_min + rng.uniform(10, 30)
    while x < x_max:  # zebra crossings and painted words
        if rng.random() < 0.5:
            for k in range(int(sc.road_width_m / 1.0)):
                yk = -half_road + 0.25 + k * 1.0
                objs.append(dict(type="dash", x0=x, x1=x + 3.0, y0=yk + 0.5, y1=yk))
        else:
            lane = rng.choice([-1, 1]) * half_road / 2
            objs.append(dict(type="text", text=str(rng.choice(["STOP", "BUS", "SLOW", "30", "TAXI", "KEEP CLEAR"])),
                             x0=x, x1=x + 2.5, y0=lane + 1.2, y1=lane - 1.2, seed=int(rng.integers(1 << 31))))
        x += rng.uniform(20, 45)
    n = int((x_max - x_min) * 0.4)
    for _ in range(n):
        xa, ya = rng.uniform(x_min, x_max), rng.uniform(-half_road, half_road)
        objs.append(dict(type="patch", x0=xa, x1=xa + rng.uniform(0.5, 3), y0=ya, y1=ya + rng.uniform(-1.5, 1.5),
                         g=float(rng.uniform(0.2, 0.4))))
    for _ in range(int((x_max - x_min) * 5)):
        objs.append(dict(type="stain", x=rng.uniform(x_min, x_max), y=rng.uniform(-y_half, y_half), a=rng.uniform(0.05, 0.5),
                         b=rng.uniform(0.03, 0.3), ang=float(rng.uniform(0, 180)), g=float(rng.uniform(0.08, 0.6))))
    for _ in range(int((x_max - x_min) * 1.5)):
        p0 = np.array([rng.uniform(x_min, x_max), rng.uniform(-y_half, y_half)])
        steps = np.cumsum(rng.normal(0, 0.4, size=(8, 2)), axis=0)
        objs.append(dict(type="crack", pts=[tuple(p) for p in p0 + steps]))
    for _ in range(int((x_max - x_min) / 12)):
        objs.append(dict(type="manhole", x=rng.uniform(x_min, x_max), y=rng.uniform(-half_road + 1, half_road - 1),
                         r=rng.uniform(0.3, 0.45)))
    for _ in range(int((x_max - x_min) * 3)):
        ys = rng.choice([-1, 1]) * rng.uniform(half_road + 0.2, y_half)
        objs.append(dict(type="gum", x=rng.uniform(x_min, x_max), y=ys, r=rng.uniform(0.015, 0.06),
                         g=float(rng.uniform(0.15, 0.35))))
    return objs


# ----------------------------------------------------------------------------------------------------------
# Conditions: texture variants and shading parameters
# ----------------------------------------------------------------------------------------------------------
_COND = {
    # ambient, sun strength, sun direction (towards the sun), tint (BGR), sky (zenith BGR, horizon BGR),
    # cloud strength, fog distance (m, 0 = none), lamp power, headlight power, window-lit fraction,
    # window emission, noise std, blur sigma px, saturation, gamma, flakes
    "reference": dict(amb=0.78, sun=0.3, sdir=(0.3, -0.5, 0.8), tint=(1.0, 1.0, 1.0), zen=(0.85, 0.75, 0.65),
                      hor=(0.92, 0.9, 0.88), clouds=0.25, fog=0.0, lamp=0.0, head=0.0, lit=0.0, emis=0.0,
                      noise=0.008, blur=0.0, sat=1.0, gamma=1.0, flakes=0),
    "dusk": dict(amb=0.30, sun=0.12, sdir=(-0.8, 0.3, 0.15), tint=(0.75, 0.9, 1.15), zen=(0.45, 0.25, 0.2),
                 hor=(0.35, 0.55, 0.95), clouds=0.15, fog=0.0, lamp=6.0, head=0.0, lit=0.2, emis=0.5,
                 noise=0.015, blur=0.0, sat=0.85, gamma=1.15, flakes=0),
    "autumn": dict(amb=0.55, sun=0.6, sdir=(-0.75, -0.2, 0.6), tint=(0.8, 0.97, 1.12), zen=(0.9, 0.6, 0.35),
                   hor=(0.95, 0.85, 0.75), clouds=0.3, fog=0.0, lamp=0.0, head=0.0, lit=0.0, emis=0.0,
                   noise=0.008, blur=0.0, sat=1.2, gamma=0.95, flakes=0),
    "sun": dict(amb=0.45, sun=0.85, sdir=(0.5, 0.35, 0.75), tint=(0.95, 1.0, 1.05), zen=(0.95, 0.55, 0.25),
                hor=(0.98, 0.85, 0.7), clouds=0.1, fog=0.0, lamp=0.0, head=0.0, lit=0.0, emis=0.0,
                noise=0.006, blur=0.0, sat=1.3, gamma=0.9, flakes=0),
    "snow": dict(amb=0.85, sun=0.1, sdir=(0.3, -0.5, 0.8), tint=(1.08, 1.0, 0.95), zen=(0.82, 0.82, 0.8),
                 hor=(0.9, 0.9, 0.9), clouds=0.05, fog=45.0, lamp=0.0, head=0.0, lit=0.0, emis=0.0,
                 noise=0.012, blur=0.9, sat=0.6, gamma=1.0, flakes=1400),
    "night": dict(amb=0.02, sun=0.0, sdir=(0, 0, 1), tint=(1.0, 1.0, 1.0), zen=(0.05, 0.02, 0.01),
                  hor=(0.12, 0.15, 0.2), clouds=0.0, fog=0.0, lamp=28.0, head=30.0, lit=0.35, emis=1.0,
                  noise=0.04, blur=0.6, sat=0.9, gamma=1.0, flakes=0),
}
_LAMP_BGR = np.array([0.45, 0.75, 1.0], np.float32)  # sodium-like street lamps
_WARM_BGR = np.array([0.35, 0.7, 1.0], np.float32)  # lit windows


def _face_variant(scene: Scene, fi: int, cond: str) -> list:
    """Albedo mip pyramid of face ``fi`` under ``cond`` (snow-covered ground, autumn foliage...)."""
    f = scene.faces[fi]
    if cond not in ("snow", "autumn", "sun") or f.kind not in ("ground", "veg", "veg_top"):
        return f.mips
    if cond == "sun" and f.kind != "ground":
        return f.mips
    key = (fi, cond)
    if key in scene._variants:
        return scene._variants[key]
    rng = np.random.default_rng([scene.seed, fi, CONDITIONS.index(cond), 7])
    tex = f.mips[0].astype(np.float32) / 255
    h, w = tex.shape[:2]
    if cond == "snow":
        snow_c = np.array([0.97, 0.95, 0.93], np.float32)
        if f.kind == "ground":
            ys = f.bounds[1][1] - (np.arange(h, dtype=np.float32) + 0.5) / f.rho  # world y of each row
            cover = np.clip(0.9 + 0.25 * _noise((h, w), rng, w / (2 * f.rho)), 0, 1)
            road = (np.abs(ys) < scene.road_half_width_m)[:, None]
            # tyre tracks in both lanes: darker wet asphalt
            tr = np.zeros(h, np.float32)
            for c in np.array([-0.7, -0.3, 0.3, 0.7]) * scene.road_half_width_m:  # wheel tracks of both lanes
                tr = np.maximum(tr, np.exp(-((ys - c) / 0.3) ** 2))
            track = tr[:, None] * (0.7 + 0.3 * _noise((h, w), rng, w / (3 * f.rho)))
            cover = np.where(road, np.clip(cover - 1.1 * track, 0, 1), cover)
            snow = snow_c * (1 + 0.04 * rng.standard_normal((h, w, 1), dtype=np.float32))
            wet = tex * 0.55
            out = wet * (1 - cover[..., None]) + snow * cover[..., None]
            for _ in range(int(w * h / 4000)):  # footprints and slush lumps
                cv2.ellipse(out, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), (int(rng.integers(3, 8)), int(rng.integers(2, 4))),
                            float(rng.uniform(0, 180)), 0, 360, (0.7, 0.7, 0.72), -1, cv2.LINE_AA)
        else:
            frac = 0.95 if f.kind == "veg_top" else 0.35
            cover = (_noise((h, w), rng, max(h, w) / 4) * 0.5 + 0.5 < frac).astype(np.float32)
            cover = cv2.GaussianBlur(cover, (0, 0), 1.5)[..., None]
            out = tex * (1 - cover) + snow_c * cover
    elif cond == "sun":  # ground only: shadows below
        out = tex.copy()
    else:  # autumn
        if f.kind == "ground":
            out = tex.copy()
            for _ in range(int(w * h / 300)):  # fallen leaves
                c = _rand_color(rng, rng.choice([[0.1, 0.45, 0.8], [0.05, 0.25, 0.6], [0.1, 0.3, 0.45]]), 0.08)
                cv2.ellipse(out, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), (int(rng.integers(2, 6)), int(rng.integers(1, 4))),
                            float(rng.uniform(0, 180)), 0, 360, c, -1, cv2.LINE_AA)
        else:
            lum = tex.mean(axis=2, keepdims=True) / max(float(tex.mean()), 1e-3)
            field_ = _noise((h, w), rng, max(h, w) / 6)[..., None] * 0.5 + 0.5
            orange, red = np.array([0.1, 0.45, 0.9], np.float32), np.array([0.08, 0.15, 0.7], np.float32)
            out = (orange * (1 - field_) + red * field_) * lum * 0.6
    p = _COND[cond]
    if f.kind == "ground" and p["sun"] >= 0.4:
        out = out * _ground_shadow(scene, f, np.array(p["sdir"], np.float64), p["amb"], p["sun"], h, w)[..., None]
    out = (np.clip(out, 0, 1) * 255).astype(np.uint8)
    scene._variants[key] = _mips(out)
    return scene._variants[key]


def _ground_shadow(scene: Scene, f: Face, sdir: np.ndarray, amb: float, sun: float, h: int, w: int) -> np.ndarray:
    """(h, w) float32 albedo factor of a ground face: amb / (amb + sun * s_z) where a caster blocks the sun.

    The shadow of each caster box is the convex hull of its corners projected along the sun direction onto
    z = 0, rasterised in the face's texel grid (so the shading of the ground matches the 3D scene)."""
    s = sdir / np.linalg.norm(sdir)
    x0, y1 = f.bounds[0][0], f.bounds[1][1]
    mask = np.zeros((h, w), np.uint8)
    for lo, hi in scene.casters:
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        g = corners[:, :2] - (corners[:, 2:] / s[2]) * s[:2]  # shadow points on z = 0
        tex = np.stack([(g[:, 0] - x0) * f.rho - 0.5, (y1 - g[:, 1]) * f.rho - 0.5], 1)
        if tex[:, 0].max() < 0 or tex[:, 0].min() > w or tex[:, 1].max() < 0 or tex[:, 1].min() > h:
            continue
        hull = cv2.convexHull(np.round(tex * 16).astype(np.int32))
        cv2.fillPoly(mask, [hull], 255, cv2.LINE_AA, shift=4)
    m = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 1.5)
    k = amb / (amb + sun * max(s[2], 0.0))
    return 1 - (1 - k) * m


# ----------------------------------------------------------------------------------------------------------
# Renderer
# ----------------------------------------------------------------------------------------------------------
def _clip_near(pts: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon (camera frame, (N, 3)) against z >= _NEAR."""
    out = []
    n = len(pts)
    for k in range(n):
        a, b = pts[k], pts[(k + 1) % n]
        ina, inb = a[2] >= _NEAR, b[2] >= _NEAR
        if ina:
            out.append(a)
        if ina != inb:
            s = (_NEAR - a[2]) / (b[2] - a[2])
            out.append(a + s * (b - a))
    return np.array(out).reshape(-1, 3)


def _face_window(face: Face, R, t, cam: SynthCamera, fov) -> tuple | None:
    """Pixel window (v0, v1, u0, u1) that contains the face's image, or None when it is not visible."""
    pc = _clip_near(face.corners() @ R.T + t)
    if len(pc) < 3:
        return None
    xn, yn = pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2]
    x0, x1 = max(xn.min(), fov[0]), min(xn.max(), fov[1])
    y0, y1 = max(yn.min(), fov[2]), min(yn.max(), fov[3])
    if x0 >= x1 or y0 >= y1:
        return None
    s = np.linspace(0, 1, 17)
    bx = np.concatenate([x0 + (x1 - x0) * s, np.full(17, x1), x1 - (x1 - x0) * s, np.full(17, x0)])
    by = np.concatenate([np.full(17, y0), y0 + (y1 - y0) * s, np.full(17, y1), y1 - (y1 - y0) * s])
    xd, yd = cam.distort(bx, by)
    u, v = cam.fx * xd + cam.cx, cam.fy * yd + cam.cy
    u0, u1 = max(0, int(np.floor(u.min())) - 2), min(cam.width, int(np.ceil(u.max())) + 3)
    v0, v1 = max(0, int(np.floor(v.min())) - 2), min(cam.height, int(np.ceil(v.max())) + 3)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def render_geometry(scene: Scene, cam: SynthCamera, cam_from_world: np.ndarray, max_distance_m: float = 250.0) -> dict:
    """Ray-cast the scene (per pixel, nearest axis-aligned face).

    Args:
        scene: the scene. cam: intrinsics. cam_from_world: (3, 4) world -> camera, metres.
        max_distance_m: faces farther than this from the camera are not drawn, metres.
    Returns:
        dict with ``depth`` (H, W) float64 z-depth in the camera frame, metres (inf = sky); ``face`` (H, W)
        int32 face index (-1 = sky); ``u_m``/``v_m`` (H, W) float32 metric texture coordinates on that face;
        ``windows`` {face index: (v0, v1, u0, u1)}; ``dirs`` (H, W, 3) world ray directions (camera z = 1);
        ``center`` (3,) camera centre.
    """
    T = np.asarray(cam_from_world, dtype=np.float64)
    if T.shape != (3, 4):
        raise ValueError(f"cam_from_world must be (3, 4), got {T.shape}")
    R, t = T[:, :3], T[:, 3]
    C = -R.T @ t
    rays = cam.rays()
    fov = (rays[..., 0].min(), rays[..., 0].max(), rays[..., 1].min(), rays[..., 1].max())
    dirs = rays @ R  # world directions, (H, W, 3)
    d = [np.ascontiguousarray(dirs[..., k]) for k in range(3)]
    H, W = cam.height, cam.width
    depth = np.full((H, W), np.inf)
    fid = np.full((H, W), -1, np.int32)
    um = np.zeros((H, W), np.float32)
    vm = np.zeros((H, W), np.float32)
    windows = {}
    lo, hi = scene.face_boxes[:, 0], scene.face_boxes[:, 1]
    near = np.linalg.norm(np.clip(C, lo, hi) - C, axis=1) < max_distance_m  # distance culling
    for i in np.nonzero(near)[0]:
        f = scene.faces[i]
        a = f.axis
        if f.sign * (C[a] - f.plane) <= 1e-9:  # back-facing
            continue
        win = _face_window(f, R, t, cam, fov)
        if win is None:
            continue
        v0, v1, u0, u1 = win
        da = d[a][v0:v1, u0:u1]
        with np.errstate(divide="ignore", invalid="ignore"):
            tt = (f.plane - C[a]) / da
        dep = depth[v0:v1, u0:u1]
        ok = (tt > _NEAR) & (tt < dep)
        coords = {}
        for k, (lo, hi) in f.bounds.items():
            pk = C[k] + tt * d[k][v0:v1, u0:u1]
            ok &= (pk >= lo) & (pk <= hi)
            coords[k] = pk
        if not ok.any():
            continue
        windows[i] = win
        dep[ok] = tt[ok]
        fid[v0:v1, u0:u1][ok] = i
        um[v0:v1, u0:u1][ok] = (f.u_sign * (coords[f.u_axis] - f.u_origin))[ok]
        vm[v0:v1, u0:u1][ok] = (f.v_sign * (coords[f.v_axis] - f.v_origin))[ok]
    tight = {}
    for i, (v0, v1, u0, u1) in windows.items():  # shrink each window to the face's final pixels
        m = fid[v0:v1, u0:u1] == i
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        if len(rows):
            tight[i] = (v0 + rows[0], v0 + rows[-1] + 1, u0 + cols[0], u0 + cols[-1] + 1)
    return dict(depth=depth, face=fid, u_m=um, v_m=vm, windows=tight, dirs=dirs, center=C)


def _sample_faces(scene: Scene, geo: dict, cam: SynthCamera, cond: str, need_glass: bool):
    """Albedo (H, W, 3) float32, labels (H, W) uint8 and glass ids (H, W) uint8 of the visible faces."""
    H, W = cam.height, cam.width
    albedo = np.zeros((H, W, 3), np.float32)
    labels = np.zeros((H, W), np.uint8)
    glass = np.zeros((H, W), np.uint8)
    rays_norm = cam.ray_norm
    f_mean = 0.5 * (cam.fx + cam.fy)
    for i, (v0, v1, u0, u1) in geo["windows"].items():
        f = scene.faces[i]
        m = geo["face"][v0:v1, u0:u1] == i
        if not m.any():
            continue
        u = geo["u_m"][v0:v1, u0:u1] * f.rho - 0.5
        v = geo["v_m"][v0:v1, u0:u1] * f.rho - 0.5
        dist = geo["depth"][v0:v1, u0:u1] * rays_norm[v0:v1, u0:u1]
        cos = np.abs(geo["dirs"][v0:v1, u0:u1, f.axis]) / rays_norm[v0:v1, u0:u1]
        with np.errstate(divide="ignore", invalid="ignore"):
            texels = dist / (f_mean * np.maximum(cos, 0.05)) * f.rho
        mips = _face_variant(scene, i, cond)
        lod = np.clip(np.log2(np.maximum(np.where(m, texels, 1.0), 1.0)) - 0.3, 0, len(mips) - 1)
        acc = np.zeros(m.shape + (3,), np.float32)
        lmin, lmax = int(np.floor(lod[m].min())), int(np.ceil(lod[m].max()))
        for L in range(lmin, lmax + 1):
            wgt = np.clip(1 - np.abs(lod - L), 0, 1)
            if not (wgt[m] > 0).any():
                continue
            s = 0.5 ** L
            mx = ((u + 0.5) * s - 0.5).astype(np.float32)
            my = ((v + 0.5) * s - 0.5).astype(np.float32)
            smp = cv2.remap(mips[L], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            acc += smp.astype(np.float32) * wgt[..., None]
        albedo[v0:v1, u0:u1][m] = acc[m] / 255
        mx, my = np.round(u).astype(np.float32), np.round(v).astype(np.float32)
        labels[v0:v1, u0:u1][m] = cv2.remap(f.labels, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)[m]
        if need_glass and f.glass is not None:
            glass[v0:v1, u0:u1][m] = cv2.remap(f.glass, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)[m]
    return albedo, labels, glass


def render_view(scene: Scene, cam: SynthCamera, cam_from_world: np.ndarray, cond: str = "reference",
                rng: np.random.Generator | None = None) -> dict:
    """Render one image of the scene under a condition.

    Args:
        scene: the scene. cam: intrinsics (the image is rendered with its distortion).
        cam_from_world: (3, 4) world -> camera, metres.
        cond: one of ``CONDITIONS``.
        rng: generator of the per-frame effects (sensor noise, flakes, exposure); default seeded from 0.
    Returns:
        dict with ``image`` (H, W, 3) uint8 BGR, ``labels`` (H, W) uint8 class ids (``CLASSES``), ``depth``
        (H, W) float64 z-depth in metres (inf for sky), ``face`` (H, W) int32 face index (-1 = sky).
    Raises:
        ValueError: unknown condition or bad pose shape.
    """
    if cond not in _COND:
        raise ValueError(f"Unknown condition {cond!r}; choose from {CONDITIONS}")
    p = _COND[cond]
    rng = np.random.default_rng(0) if rng is None else rng
    geo = render_geometry(scene, cam, cam_from_world)
    albedo, labels, glass = _sample_faces(scene, geo, cam, cond, need_glass=p["lit"] > 0)
    H, W = cam.height, cam.width
    hit = geo["face"] >= 0
    depth = geo["depth"]
    C = geo["center"]
    dirs = geo["dirs"]
    normals = np.zeros((len(scene.faces) + 1, 3), np.float32)
    normals[:-1] = np.array([f.normal for f in scene.faces]) if scene.faces else 0
    nrm = normals[geo["face"]]  # -1 -> last row (zeros) for sky
    # direct light: ambient + directional sun
    sdir = np.array(p["sdir"], np.float32)
    sdir /= np.linalg.norm(sdir)
    light = p["amb"] + p["sun"] * np.clip(nrm @ sdir, 0, None)
    light = light[..., None] * np.array(p["tint"], np.float32)
    col = albedo * light
    if p["lamp"] > 0 or p["head"] > 0:
        X = C + np.where(hit, depth, 0)[..., None] * dirs  # world points (H, W, 3)
        extra = np.zeros((H, W, 3), np.float32)
        near = scene.lamps[np.linalg.norm(scene.lamps[:, :2] - C[:2], axis=1) < 60] if len(scene.lamps) else []
        for P in near:
            v = (P - X).astype(np.float32)
            d2 = (v * v).sum(-1) + 0.5
            cosl = np.clip((v * nrm).sum(-1) / np.sqrt(d2), 0, None) * (X[..., 2] < P[2] - 0.05)
            extra += (p["lamp"] * cosl / d2)[..., None] * _LAMP_BGR
        if p["head"] > 0:  # headlights: a forward cone from just below the camera
            fwd = dirs[H // 2, W // 2] / np.linalg.norm(dirs[H // 2, W // 2])
            fwd = np.array([fwd[0], fwd[1], 0.0]) / max(np.linalg.norm(fwd[:2]), 1e-6)
            Ph = C - np.array([0, 0, 1.0])
            v = (X - Ph).astype(np.float32)
            dist2 = (v * v).sum(-1) + 1.0
            vn = v / np.sqrt(dist2)[..., None]
            cone = np.clip(vn @ fwd.astype(np.float32), 0, None) ** 6
            cosl = np.clip(-(vn * nrm).sum(-1), 0, None)
            extra += (p["head"] * cone * cosl / dist2)[..., None] * np.array([0.9, 0.95, 1.0], np.float32)
        col += albedo * extra * hit[..., None]
    if p["lit"] > 0:  # lit windows (a fixed random subset per scene)
        lut_rng = np.random.default_rng([scene.seed, 55, CONDITIONS.index(cond)])
        lut = (lut_rng.random(256) < p["lit"]).astype(np.float32) * lut_rng.uniform(0.6, 1.2, 256).astype(np.float32)
        lut[0] = 0
        e = lut[glass][..., None] * p["emis"] * (_WARM_BGR * (0.5 + 1.5 * albedo))
        col += e
    # sky (only where no face was hit)
    sky_px = ~hit
    if sky_px.any():
        dn = dirs[sky_px] / (cam.ray_norm[sky_px])[:, None]  # (S, 3) unit directions
        el = np.arcsin(np.clip(dn[:, 2], -1, 1))
        az = np.arctan2(dn[:, 1], dn[:, 0])
        Hs, Ws = scene.sky.shape
        my = ((1 - np.clip(el, 0, None) / (np.pi / 2)) * (Hs - 1)).astype(np.float32)[None]
        mx = ((az + np.pi) / (2 * np.pi) * (Ws - 1)).astype(np.float32)[None]
        clouds = cv2.remap(scene.sky, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)[0]
        tgrad = np.clip(el / 0.8, 0, 1)[:, None].astype(np.float32)
        sky = np.array(p["hor"], np.float32) * (1 - tgrad) + np.array(p["zen"], np.float32) * tgrad
        cl = np.clip((clouds - 0.45) * 2.5, 0, 1)[:, None] * p["clouds"]
        col[sky_px] = sky * (1 - cl) + cl * np.float32(min(1.0, p["amb"] + 0.2))
    if p["fog"] > 0:
        dist = np.where(hit, depth * cam.ray_norm, 1e4)
        fa = np.exp(-dist / p["fog"]).astype(np.float32)[..., None]
        col = col * fa + np.array(p["hor"], np.float32) * (1 - fa)
    # lamp glows (night/dusk): halos around visible lamp heads
    if p["lamp"] > 0 and len(scene.lamps):
        T = np.asarray(cam_from_world, np.float64)
        pc = scene.lamps @ T[:, :3].T + T[:, 3]
        uv, ok = cam.project(pc)
        glow = np.zeros((H, W), np.float32)
        for (u, v), z, good in zip(uv, pc[:, 2], ok):
            if not good or not (-40 < u < W + 40 and -40 < v < H + 40):
                continue
            ui, vi = int(np.clip(round(u), 0, W - 1)), int(np.clip(round(v), 0, H - 1))
            if 0 <= u < W and 0 <= v < H and depth[vi, ui] < z - 0.5:
                continue  # occluded
            r = 0.35 * cam.fx / z
            ext = int(min(max(W, H), 20 * r)) + 2  # the halo is negligible beyond ~20 r
            v0, v1, u0, u1 = max(0, int(v) - ext), min(H, int(v) + ext), max(0, int(u) - ext), min(W, int(u) + ext)
            if v0 >= v1 or u0 >= u1:
                continue
            yy, xx = np.mgrid[v0:v1, u0:u1].astype(np.float32)
            d2 = (xx - u) ** 2 + (yy - v) ** 2
            glow[v0:v1, u0:u1] += np.exp(-d2 / (2 * r * r)) * 1.2 + 0.5 * np.exp(-np.sqrt(d2) / (3 * r))
        col += glow[..., None] * _LAMP_BGR * (p["lamp"] / 28.0)
    # camera: exposure jitter, saturation, gamma, blur, flakes, noise, vignetting
    col *= np.float32(rng.uniform(0.95, 1.05))
    grey = col.mean(axis=2, keepdims=True)
    col = grey + (col - grey) * p["sat"]
    col = np.clip(col, 0, None) ** (1 / p["gamma"])
    if p["flakes"] > 0:
        n = int(p["flakes"] * rng.uniform(0.8, 1.2))
        layer = np.zeros((H, W), np.float32)
        xs, ys = rng.uniform(0, W, n), rng.uniform(0, H, n)
        size = rng.pareto(3.0, n) + 0.6
        for x, y, s in zip(xs, ys, size):
            ln = s * rng.uniform(1.0, 3.0)
            cv2.line(layer, (int(x), int(y)), (int(x + 0.3 * ln), int(y + ln)), float(rng.uniform(0.5, 1.0)),
                     max(1, int(s)), cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer, (0, 0), 0.8)
        col = col * (1 - layer[..., None] * 0.85) + layer[..., None] * 0.95
    if p["blur"] > 0:
        col = cv2.GaussianBlur(col, (0, 0), p["blur"])
    col *= cam.vignette
    if p["noise"] > 0:
        col += rng.normal(0, p["noise"], size=(H, W, 1)).astype(np.float32)
        col += rng.normal(0, p["noise"] * 0.5, size=(H, W, 3)).astype(np.float32)
    img = (np.clip(col, 0, 1) * 255 + 0.5).astype(np.uint8)
    labels[~hit] = 0
    if cond == "snow":  # road markings are under the snow
        labels[labels == 8] = 1
    return dict(image=img, labels=labels, depth=depth, face=geo["face"])


# ----------------------------------------------------------------------------------------------------------
# Trajectories
# ----------------------------------------------------------------------------------------------------------
def _rot_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """cam_from_world rotation for a camera with heading ``yaw`` (from +x towards +y), ``pitch`` (up > 0) and
    ``roll`` (radians); camera axes x right, y down, z forward; world up = +z."""
    f = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    r = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    dn = np.cross(f, r)
    c, s = math.cos(roll), math.sin(roll)
    r, dn = c * r + s * dn, -s * r + c * dn
    return np.stack([r, dn, f], axis=0)


def make_trajectory(n: int, spacing_m: float, x_start: float, lateral_m: float, height_m: float,
                    yaw_offset_rad: float, pitch_rad: float, wander_m: float, noise_rad: float,
                    rng: np.random.Generator) -> np.ndarray:
    """A car-mounted camera driving along +x.

    Returns:
        (n, 3, 4) cam_from_world poses, metres; consecutive centres ~``spacing_m`` apart.
    """
    phase, lam = rng.uniform(0, 2 * np.pi), rng.uniform(25, 50)
    out = np.zeros((n, 3, 4))
    for k in range(n):
        x = x_start + k * spacing_m + rng.uniform(-0.05, 0.05) * spacing_m
        y = lateral_m + wander_m * math.sin(2 * np.pi * x / lam + phase)
        dy = wander_m * 2 * np.pi / lam * math.cos(2 * np.pi * x / lam + phase)
        z = height_m + rng.normal(0, 0.02)
        R = _rot_from_angles(math.atan(dy) + yaw_offset_rad + rng.normal(0, noise_rad),
                             pitch_rad + rng.normal(0, noise_rad), rng.normal(0, noise_rad))
        out[k] = np.concatenate([R, (-R @ np.array([x, y, z]))[:, None]], axis=1)
    return out


# ----------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------
def _pose_line(name: str, T: np.ndarray) -> str:
    q = rotmat_to_qvec(T[:, :3])
    C = -T[:, :3].T @ T[:, 3]
    return f"{name} " + " ".join(f"{v:.9f}" for v in (*q, *C))


def _write_lines(path: Path, lines: list[str], header: list[str] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"# {h}\n" for h in header) + "".join(line + "\n" for line in lines))


def _write_image(path: Path, img: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if path.suffix == ".jpg" else [])
    if not ok:
        raise OSError(f"Could not write {path}")


def _write_correspondence(path: Path, im_i: str, im_j: str, pt_i: np.ndarray, pt_j: np.ndarray, wh) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    c = np.array([(wh[0] - 1) / 2, (wh[1] - 1) / 2])
    dist = np.linalg.norm(pt_i - c, axis=1, keepdims=True) / (0.5 * math.hypot(*wh))
    with h5py.File(path, "w") as f:
        f.create_dataset("im_i_path", data=np.array([ord(ch) for ch in im_i], np.uint16)[:, None])
        f.create_dataset("im_j_path", data=np.array([ord(ch) for ch in im_j], np.uint16)[:, None])
        f.create_dataset("pt_i", data=pt_i.astype(np.float64))
        f.create_dataset("pt_j", data=pt_j.astype(np.float64))
        f.create_dataset("dist_from_center", data=dist.astype(np.float64))


def correspondences(geo_i: dict, T_i: np.ndarray, geo_j: dict, T_j: np.ndarray, cam: SynthCamera,
                    n_points: int, depth_tol: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exact correspondences between two rendered views from the depth buffers.

    Args:
        geo_i, geo_j: outputs of :func:`render_geometry` (or :func:`render_view`) for views i and j.
        T_i, T_j: (3, 4) cam_from_world of the views.
        n_points: pixels of view i sampled (uniformly among non-sky pixels).
        depth_tol: relative depth tolerance of the occlusion test in view j.
    Returns:
        pt_i, pt_j: (N, 2) float64 pixels (x, y), integer = pixel centre; pt_i are integer pixel centres.
    """
    ys, xs = np.nonzero(np.isfinite(geo_i["depth"]))
    if len(xs) == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    sel = rng.choice(len(xs), size=min(n_points, len(xs)), replace=False)
    xs, ys = xs[sel], ys[sel]
    rays = cam.rays()[ys, xs]  # (N, 3), z = 1
    z = geo_i["depth"][ys, xs]
    Ri, ti = T_i[:, :3], T_i[:, 3]
    Xw = (rays * z[:, None] - ti) @ Ri  # R^T (X_cam - t)
    pc = Xw @ T_j[:, :3].T + T_j[:, 3]
    uv, ok = cam.project(pc)
    ok &= (uv[:, 0] > -0.5) & (uv[:, 0] < cam.width - 0.5) & (uv[:, 1] > -0.5) & (uv[:, 1] < cam.height - 0.5)
    ui = np.clip(np.round(uv[:, 0]).astype(int), 0, cam.width - 1)
    vi = np.clip(np.round(uv[:, 1]).astype(int), 0, cam.height - 1)
    dj = geo_j["depth"][vi, ui]
    ok &= np.abs(dj - pc[:, 2]) < depth_tol * pc[:, 2]
    return np.stack([xs, ys], 1).astype(np.float64)[ok], uv[ok]


# ----------------------------------------------------------------------------------------------------------
# Pipeline step
# ----------------------------------------------------------------------------------------------------------
def _name(index: int, t_us: int) -> str:
    return f"img_{index:05d}_c0_{t_us}us.jpg"


def _frame_rng(seed: int, slice_id: int, cond: str, k: int, purpose: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, slice_id, CONDITIONS.index(cond), k, purpose])


def plan_slice(conf: DictConfig, slice_id: int) -> dict:
    """Trajectories, names and timestamps of one slice (no rendering).

    Returns:
        dict with ``x_range`` (street extent, metres), ``database`` (list of (name, (3, 4) cam_from_world)) and
        ``queries`` {cond: list of (name, cam_from_world)}.
    """
    tr = conf.trajectory
    rng = np.random.default_rng([conf.seed, slice_id, 1])
    db_len = (tr.n_database - 1) * tr.database_spacing_m
    q_len = (tr.n_queries - 1) * tr.query_spacing_m
    length = max(db_len, q_len)
    x_range = (-25.0, length + 70.0)
    db = make_trajectory(tr.n_database, tr.database_spacing_m, 0.0, tr.lane_offset_m, tr.camera_height_m,
                         math.radians(tr.yaw_offset_deg), math.radians(tr.pitch_deg), tr.wander_m,
                         math.radians(tr.pose_noise_deg), rng)
    dt_db = tr.database_spacing_m / tr.speed_mps
    t0 = int(_REF_DATE.timestamp() * 1e6) + slice_id * 3_600_000_000
    index = 1
    database = []
    for k, T in enumerate(db):
        database.append((_name(index, t0 + int(round(k * dt_db * 1e6)) + int(rng.integers(0, 1000))), T))
        index += 1
    queries = {}
    for cond in conf.conditions:
        if cond not in CONDITIONS or cond == "reference":
            raise ValueError(f"Unknown query condition {cond!r}; choose from {CONDITIONS[1:]}")
        x_start = float(rng.uniform(0, max(db_len - q_len, 0.0)))
        lat = tr.lane_offset_m + float(rng.uniform(-tr.query_lateral_offset_m, tr.query_lateral_offset_m))
        yaw = tr.yaw_offset_deg + float(rng.uniform(-tr.query_yaw_jitter_deg, tr.query_yaw_jitter_deg))
        Ts = make_trajectory(tr.n_queries, tr.query_spacing_m, x_start, lat, tr.camera_height_m + rng.uniform(-0.1, 0.1),
                             math.radians(yaw), math.radians(tr.pitch_deg), tr.wander_m,
                             math.radians(tr.pose_noise_deg), rng)
        tq0 = int(_COND_DATES[cond].timestamp() * 1e6) + slice_id * 3_600_000_000
        dt = tr.query_spacing_m / tr.speed_mps
        queries[cond] = []
        for k, T in enumerate(Ts):
            queries[cond].append((_name(index, tq0 + int(round(k * dt * 1e6)) + int(rng.integers(0, 1000))), T))
            index += 1
    return dict(x_range=x_range, database=database, queries=queries)


def slice_scene(conf: DictConfig, slice_id: int) -> tuple[dict, Scene]:
    """The plan (:func:`plan_slice`) and the scene of one slice, exactly as :func:`main` generates them.

    Args:
        conf: a configuration merged with ``default_conf``.
        slice_id: the slice number.
    """
    plan = plan_slice(conf, slice_id)
    seed = int(np.random.default_rng([conf.seed, slice_id]).integers(1 << 31))
    return plan, build_scene(conf.scene, plan["x_range"], seed=seed)


def _odometry_lines(frames: list) -> list[str]:
    lines = []
    for (n0, T0), (n1, T1) in zip(frames[:-1], frames[1:]):
        R = T1[:, :3] @ T0[:, :3].T
        t = T1[:, 3] - R @ T0[:, 3]
        q = rotmat_to_qvec(R)
        lines.append(f"{n0} {n1} " + " ".join(f"{v:.9f}" for v in (*q, *t)))
    return lines


def main(conf: DictConfig | dict, out_dir: Path, overwrite: bool = False) -> Path:
    """Generate the synthetic dataset into ``out_dir`` (layout in the module docstring).

    Args:
        conf: configuration (merged with ``default_conf``; unknown keys raise ``ValueError``).
        out_dir: dataset root (gets ``intrinsics.txt``, ``sliceN/``, ``correspondence/``, ``config.yaml``).
        overwrite: re-render images that already exist (otherwise they are kept; text files are rewritten).
    Returns:
        ``out_dir``.
    """
    from fgsn.utils.config import merge_config, save_config
    from tqdm import tqdm

    conf = merge_config(default_conf, extra=OmegaConf.to_container(conf) if isinstance(conf, DictConfig) else conf)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(conf, out_dir / "config.yaml")
    cam = SynthCamera.from_conf(conf.camera)
    _write_lines(out_dir / "intrinsics.txt",
                 ["c0 OPENCV %d %d " % (cam.width, cam.height) + " ".join(f"{v:.6f}" for v in cam.colmap_params())],
                 ["Synthetic demo dataset (reconstruction.synthetic): camera list with one line of data per camera:",
                  "  [Camera ID] [Distortion model] [w] [h] [fx] [fy] [cx] [cy] [k1] [k2] [p1] [p2]",
                  "COLMAP convention (pixel centre at +0.5); images are distorted with these parameters."])
    q = conf.jpeg_quality
    for slice_id in conf.slices:
        slice_id = int(slice_id)
        sdir = out_dir / f"slice{slice_id}"
        plan, scene = slice_scene(conf, slice_id)
        logger.info("slice%d: %d faces, street x in [%.0f, %.0f] m", slice_id, len(scene.faces), *plan["x_range"])
        _write_lines(sdir / f"ground-truth-database-images-slice{slice_id}.txt",
                     [_pose_line(n, T) for n, T in plan["database"]])
        all_q = []
        for cond, frames in plan["queries"].items():
            _write_lines(sdir / "camera-poses" / f"slice-{slice_id}-gt-query-images-{cond}.txt",
                         [_pose_line(n, T) for n, T in frames])
            all_q += [n for n, _ in frames]
        _write_lines(sdir / f"test-images-slice{slice_id}.txt", all_q)
        odo_header = ["name_prev name_cur qw qx qy qz tx ty tz: cur_from_prev (X_cur = R X_prev + t), exact,",
                      "world-to-camera convention, quaternion (w, x, y, z), metres"]
        _write_lines(sdir / "odometry" / "database.txt", _odometry_lines(plan["database"]), odo_header)
        for cond, frames in plan["queries"].items():
            _write_lines(sdir / "odometry" / f"{cond}.txt", _odometry_lines(frames), odo_header)

        jobs = [("database", "reference", k, n, T) for k, (n, T) in enumerate(plan["database"])]
        jobs += [("query", c, k, n, T) for c, fr in plan["queries"].items() for k, (n, T) in enumerate(fr)]
        for split, cond, k, name, T in tqdm(jobs, desc=f"slice{slice_id} images"):
            ip = sdir / split / name
            sp = sdir / "semantics" / split / (Path(name).stem + ".png")
            if ip.exists() and (sp.exists() or not conf.write_semantics) and not overwrite:
                continue
            r = render_view(scene, cam, T, cond, _frame_rng(conf.seed, slice_id, cond, k))
            _write_image(ip, r["image"], q)
            if conf.write_semantics:
                _write_image(sp, r["labels"], q)

        if conf.write_correspondences:
            _write_slice_correspondences(conf, out_dir, slice_id, scene, cam, plan, sdir, overwrite)
    return out_dir


def ground_truth_label_items(dataset) -> list[tuple[str, Path]]:
    """(image key, ground-truth class PNG) of every database and query image of a generated dataset, for
    :func:`reconstruction.semantics.labels_from_pngs` (a perfect "precomputed" label source, ``len(CLASSES)``
    labels).

    Raises:
        FileNotFoundError: a PNG is missing (the dataset was generated with ``write_semantics=false``).
    """
    items = []
    for r in dataset.database + dataset.queries:
        slice_dir, split, fname = Path(r.key).parts[-3:]
        png = Path(dataset.root) / slice_dir / "semantics" / split / (Path(fname).stem + ".png")
        if not png.is_file():
            raise FileNotFoundError(f"{png}: ground-truth semantics missing (generate with write_semantics=true)")
        items.append((r.key, png))
    return items


def _write_slice_correspondences(conf, out_dir, slice_id, scene, cam, plan, sdir, overwrite):
    from tqdm import tqdm

    cc = conf.correspondence
    root = out_dir / "correspondence" / f"slice{slice_id}"
    db = plan["database"]
    rng = np.random.default_rng([conf.seed, slice_id, 2])
    pairs = []
    for cond in conf.conditions:
        seen = set()
        for _ in range(cc.n_pairs):
            for _attempt in range(20):
                i = int(rng.integers(len(db)))
                j = int(np.clip(i + rng.integers(-cc.max_index_offset, cc.max_index_offset + 1), 0, len(db) - 1))
                if (i, j) not in seen:
                    break
            seen.add((i, j))
            pairs.append((cond, i, j))
    for cond, i, j in tqdm(pairs, desc=f"slice{slice_id} correspondences"):
        (ni, Ti), (nj, Tj) = db[i], db[j]
        rel_i, rel_j = f"slice{slice_id}/reference/{ni}", f"slice{slice_id}/{cond}/{nj}"
        mat = root / "correspondence_data" / f"correspondence_slice{slice_id}_runref_run{cond}_c{i}_c{j}.mat"
        if mat.exists() and (root / "images" / rel_j).exists() and not overwrite:
            continue
        src = sdir / "database" / ni
        (root / "images" / rel_i).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / "images" / rel_i)
        rj = render_view(scene, cam, Tj, cond, _frame_rng(conf.seed, slice_id, cond, j, purpose=1))
        _write_image(root / "images" / rel_j, rj["image"], conf.jpeg_quality)
        gi = render_geometry(scene, cam, Ti)
        pt_i, pt_j = correspondences(gi, Ti, rj, Tj, cam, cc.n_points, cc.depth_tolerance,
                                     np.random.default_rng([conf.seed, slice_id, i, j, 3]))
        _write_correspondence(mat, rel_i, rel_j, pt_i, pt_j, (cam.width, cam.height))


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write")
    parser.add_argument("--config", type=Path, default=None, help="YAML file with keys of default_conf")
    parser.add_argument("--overwrite", action="store_true", help="re-render images that already exist")
    parser.add_argument("dotlist", nargs="*", help="overrides key=value, e.g. trajectory.n_database=100")


def run(args: argparse.Namespace) -> int:
    from fgsn.utils.config import merge_config
    from fgsn.utils.logging import setup_logging

    conf = merge_config(default_conf, yaml_path=args.config, overrides=args.dotlist)
    setup_logging(Path(args.out) / "log.txt")
    main(conf, args.out, overwrite=args.overwrite)
    return 0
