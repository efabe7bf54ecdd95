"""The one visibility model of a labelled map point, shared by GSMC and PFSL (Toft et al., ECCV 2018, Sec. 3.2).

A map point X with observation statistics (:mod:`reconstruction.sfm_map`: ``d_min`` / ``d_max`` the smallest /
largest distance to an observing database camera, ``view_dir`` the mean unit direction point -> observing cameras,
``view_spread`` the **half-angle** of its observation cone, i.e. the largest angle between an observing direction
and ``view_dir``) is visible from a camera centre C when

    d_min * s0 <= |C - X| <= d_max * s1          (distance_scale = (s0, s1))
    angle(C - X, view_dir) <= view_spread + m     (cone_margin_rad = m, the cone's half-angle widened by m)

GSMC and PFSL differ only in their parameters (``gsmc.distance_margin`` / ``gsmc.view_margin_deg``,
``pfsl.visibility.distance_scale`` / ``cone_margin_deg``), never in the definition. Occlusion is not modelled.
"""
from __future__ import annotations

import math
from typing import Sequence, TypeVar

import numpy as np

Array = TypeVar("Array")  # np.ndarray or torch.Tensor


def cone_cos(view_spread: Array, cone_margin_rad: float) -> Array:
    """cos of the visibility cone's half-angle ``min(view_spread + margin, pi)``; (M,) like ``view_spread``
    (NumPy or torch), radians in."""
    if type(view_spread).__module__.startswith("torch"):
        import torch

        return torch.cos(torch.clamp(view_spread + cone_margin_rad, max=math.pi))
    return np.cos(np.minimum(view_spread + cone_margin_rad, math.pi))


def visible(dist2: Array, along: Array, d_min: Array, d_max: Array, view_spread: Array,
            distance_scale: Sequence[float] = (1.0, 1.0), cone_margin_rad: float = 0.0) -> Array:
    """Visibility of map points from camera centres (module docstring), NumPy or torch, broadcasting.

    Args:
        dist2: |C - X|^2, metres^2.
        along: (C - X) . view_dir, metres.
        d_min, d_max: the points' distance range, metres.
        view_spread: the points' observation-cone half-angles, radians.
        distance_scale: (s0, s1) factors on d_min and d_max.
        cone_margin_rad: added to the half-angle, radians.
    Returns:
        bool array of the broadcast shape.
    """
    return within(dist2, along, d_min * float(distance_scale[0]), d_max * float(distance_scale[1]),
                  cone_cos(view_spread, cone_margin_rad))


def within(dist2: Array, along: Array, lo: Array, hi: Array, cos_thr: Array) -> Array:
    """:func:`visible` with its bounds precomputed: ``lo <= |C - X| <= hi`` and ``along >= |C - X| cos_thr``
    (``cos_thr`` from :func:`cone_cos`), NumPy or torch, broadcasting."""
    dist = dist2 ** 0.5
    return (dist >= lo) & (dist <= hi) & (along >= dist * cos_thr)
