"""The shared visibility model (reconstruction.visibility): view_spread is the cone's half-angle."""
import math

import numpy as np
import torch

from reconstruction.visibility import visible


def _at(angle_deg: float, dist: float):
    """dist2 and along of a camera at ``dist`` metres from a point whose mean viewing direction is +x, seen at
    ``angle_deg`` from it."""
    a = math.radians(angle_deg)
    d = dist * np.array([math.cos(a), math.sin(a), 0.0])
    return float(d @ d), float(d[0])


def test_half_angle_and_distance_bounds():
    spread = np.float64(math.radians(30))  # the largest angle between an observing direction and the mean
    for angle, dist, scale, margin, expect in [
        (29.0, 10.0, (1, 1), 0.0, True), (31.0, 10.0, (1, 1), 0.0, False),  # the half-angle itself, not half of it
        (39.0, 10.0, (1, 1), math.radians(10), True), (41.0, 10.0, (1, 1), math.radians(10), False),
        (0.0, 4.9, (1, 1), 0.0, False), (0.0, 5.0, (1, 1), 0.0, True), (0.0, 20.0, (1, 1), 0.0, True),
        (0.0, 20.1, (1, 1), 0.0, False), (0.0, 2.6, (0.5, 1.5), 0.0, True), (0.0, 29.9, (0.5, 1.5), 0.0, True),
        (0.0, 30.1, (0.5, 1.5), 0.0, False), (170.0, 10.0, (1, 1), math.radians(160), True),  # cone past 180 deg
    ]:
        dist2, along = _at(angle, dist)
        got = visible(np.float64(dist2), np.float64(along), 5.0, 20.0, spread, scale, margin)
        assert bool(got) is expect, (angle, dist, scale, margin)
        t = visible(torch.tensor(dist2), torch.tensor(along), 5.0, 20.0, torch.tensor(float(spread)), scale, margin)
        assert bool(t) is expect
