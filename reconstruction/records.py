"""The records every reader produces and every stage consumes: one image of a benchmark, and the error a bad
dataset file raises. A module of its own so that the readers (:mod:`reconstruction.datasets`,
:mod:`reconstruction.nvm`) import it without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fgsn.utils.errors import UserError

from .camera import Camera


class DatasetError(UserError, ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


@dataclass
class ImageRecord:
    """One database or query image of a benchmark.

    Attributes:
        name: the name the benchmark's submission uses (CMU: ``img_..._c0_...us.jpg``; RobotCar:
            ``rear/<ts>.jpg``).
        key: unique key within the dataset, the image path relative to the dataset root (cache keys).
        path: absolute image path.
        camera: intrinsics.
        camera_id: the sensor (``c0``/``c1`` on CMU; ``rear``/``left``/``right`` on RobotCar).
        condition: capture condition (``overcast-reference``, ``snow``, ``night``, ... or a date ``YYYY-MM-DD``).
        groups: scene groups the image counts in (``urban``/``suburban``/``park``; ``day``/``night``).
        timestamp_s: capture time, seconds since the epoch.
        map_id: the model the image belongs to / is localized against (CMU: ``sliceN``; RobotCar: ``all-merged``).
        cam_from_world: (3, 4) ground-truth pose, world -> camera, metres; None when hidden.
    """

    name: str
    key: str
    path: Path
    camera: Camera
    camera_id: str
    condition: str
    groups: tuple[str, ...]
    timestamp_s: float
    map_id: str
    cam_from_world: np.ndarray | None = None

    @property
    def sequence(self) -> str:
        """Images of one traversal of one sensor: ordered by ``timestamp_s`` they form a sequence."""
        return f"{self.map_id}/{self.condition}/{self.camera_id}"
