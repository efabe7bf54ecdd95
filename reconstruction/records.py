"""The records every reader produces and every stage consumes: one image of a benchmark, the error a bad
dataset file raises, and the strict UTF-8 line reader of the text formats (a byte that is not UTF-8 is that
error, naming the file and the line). A module of its own so that the readers (:mod:`reconstruction.datasets`,
:mod:`reconstruction.nvm`, :mod:`reconstruction.odometry`) import it without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from fgsn.utils.errors import UserError

from .camera import Camera


class DatasetError(UserError, ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


def _first_non_utf8_line(path: Path) -> int:
    """The 1-based number of the first line of ``path`` that is not UTF-8, counted as text mode counts lines
    (``\\n``, ``\\r\\n`` or ``\\r``): UTF-8 validity is local and no line break byte is part of a character."""
    lineno = 0
    with open(path, "rb") as f:
        for raw in f:  # ends at b"\n"; bytes.splitlines() splits at the universal newlines only
            for piece in raw.splitlines():
                lineno += 1
                try:
                    piece.decode("utf-8")
                except UnicodeDecodeError:
                    return lineno
    return max(lineno, 1)


def text_lines(path: Path, error: type[Exception] = DatasetError) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a UTF-8 text file, read one line at a time as ``open(path)`` reads it
    (universal newlines; each line keeps its end).

    Raises:
        error: the file cannot be opened, or holds bytes that are not UTF-8 (naming the file and that line).
    """
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    with f:
        try:
            yield from enumerate(f, 1)
        except UnicodeDecodeError:
            raise error(f"{path}:{_first_non_utf8_line(path)}: not UTF-8 text") from None


def read_text(path: Path, error: type[Exception] = DatasetError) -> str:
    """The whole of a UTF-8 text file, as ``Path.read_text`` reads it (universal newlines).

    Raises:
        error: the file cannot be read, or holds bytes that are not UTF-8 (naming the file and that line).
    """
    return "".join(line for _, line in text_lines(path, error))


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
