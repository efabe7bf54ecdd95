"""Trajectories of the synthetic dataset: camera orientation from heading, pitch and roll, and car-mounted
camera traversals along the street (+x) with lateral wander and pose jitter.
"""
from __future__ import annotations

import math

import numpy as np

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
