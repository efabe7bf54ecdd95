"""Datasets for absolute pose regression: readers for 7-Scenes, Cambridge Landmarks and the Seasons layouts,
pose normalisation statistics, temporal windows, and the torch dataset that loads and augments images.

Layouts read (published formats):

7-Scenes (Shotton et al., CVPR 2013), ``root`` = one scene folder (e.g. ``chess/``)::

    root/TrainSplit.txt, root/TestSplit.txt     lines "sequenceN" (N = 1, 2, ...) -> folder seq-0N
    root/seq-XX/frame-XXXXXX.color.png          RGB image
    root/seq-XX/frame-XXXXXX.pose.txt           4x4 camera-to-world matrix, 4 rows of 4 numbers

Cambridge Landmarks (Kendall et al., ICCV 2015), ``root`` = one scene folder (e.g. ``KingsCollege/``)::

    root/dataset_train.txt, root/dataset_test.txt   3 header lines, then
                                                    "seqN/frameXXXXX.png X Y Z W P Q R"
                                                    camera centre (X, Y, Z) and world-to-camera quaternion

Seasons (Extended CMU Seasons, RobotCar Seasons, and the built-in demo, which uses the CMU layout), read with
:func:`reconstruction.datasets.load_dataset`: training split = the reference traversal (database), test split =
the queries with ground truth.

Every reader returns :class:`PoseRecord` lists in the pose convention of :mod:`localization.apr` and raises
:class:`reconstruction.datasets.DatasetError` naming the file (and line) for bad input.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from fgsn.utils.io import ImageReadError, read_image
from reconstruction.datasets import load_dataset
from reconstruction.records import DatasetError
from reconstruction.geometry import average_quaternions, rotmat_to_qvec

from .pose import cam_from_world_to_pose

logger = logging.getLogger(__name__)

FORMATS = ("7scenes", "cambridge", "cmu", "robotcar")


@dataclass
class PoseRecord:
    """One training or test image with its pose.

    Attributes:
        name: identifier (path relative to the dataset root, or the benchmark's submission name).
        path: image file.
        position: (3,) camera centre, world frame, metres.
        qvec: (4,) world-to-camera quaternion (w, x, y, z), w >= 0.
        sequence: the temporal sequence the image belongs to (windows never cross sequences).
        order: position within the sequence (frame number or timestamp; sorted ascending).
        map_id: the world frame the pose is expressed in (one per scene / slice).
    """

    name: str
    path: Path
    position: np.ndarray
    qvec: np.ndarray
    sequence: str
    order: float
    map_id: str = ""


# ---------------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------------


def _rotation_to_qvec(R: np.ndarray, where: str) -> np.ndarray:
    if not np.all(np.isfinite(R)) or abs(np.linalg.det(R) - 1.0) > 1e-2 or np.abs(R @ R.T - np.eye(3)).max() > 1e-2:
        raise DatasetError(f"{where}: the 3x3 block is not a rotation matrix")
    return rotmat_to_qvec(R)


def read_7scenes_pose(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a 7-Scenes ``frame-XXXXXX.pose.txt`` (4x4 camera-to-world) -> (camera centre (3,), qvec (4,))."""
    if not path.is_file():
        raise DatasetError(f"{path}: pose file not found")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            vals = [float(v) for v in line.split()]
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: non-numeric value in {line.strip()!r}") from None
        if len(vals) != 4:
            raise DatasetError(f"{path}:{lineno}: expected 4 numbers per row of the 4x4 camera-to-world matrix, "
                               f"got {len(vals)}")
        rows.append(vals)
    if len(rows) != 4:
        raise DatasetError(f"{path}: expected 4 rows (4x4 camera-to-world matrix), got {len(rows)}")
    M = np.array(rows)
    R_c2w = M[:3, :3]
    qvec = _rotation_to_qvec(R_c2w.T, str(path))
    return M[:3, 3].copy(), qvec


def read_7scenes(root: str | Path, split: str) -> list[PoseRecord]:
    """Read the ``train`` or ``test`` split of one 7-Scenes scene.

    Raises:
        DatasetError: missing split file, a line other than ``sequenceN``, a missing sequence folder, an
            empty sequence, an image without pose file, or a malformed pose file.
    """
    root = Path(root)
    split_file = root / {"train": "TrainSplit.txt", "test": "TestSplit.txt"}[split]
    if not split_file.is_file():
        raise DatasetError(f"{split_file}: split file not found")
    records = []
    for lineno, line in enumerate(split_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = re.fullmatch(r"sequence(\d+)", line)
        if m is None:
            raise DatasetError(f"{split_file}:{lineno}: expected 'sequenceN', got {line!r}")
        seq = f"seq-{int(m.group(1)):02d}"
        seq_dir = root / seq
        if not seq_dir.is_dir():
            raise DatasetError(f"{split_file}:{lineno}: sequence folder {seq_dir} not found")
        images = sorted(seq_dir.glob("frame-*.color.png"))
        if not images:
            raise DatasetError(f"{seq_dir}: no frame-XXXXXX.color.png images")
        for img in images:
            frame = img.name[: -len(".color.png")]
            position, qvec = read_7scenes_pose(seq_dir / f"{frame}.pose.txt")
            order = float(frame.split("-")[1]) if frame.split("-")[1].isdigit() else float(len(records))
            records.append(PoseRecord(f"{seq}/{img.name}", img, position, qvec, seq, order, root.name))
    return records


def read_cambridge(root: str | Path, split: str) -> list[PoseRecord]:
    """Read the ``train`` or ``test`` split of one Cambridge Landmarks scene.

    Raises:
        DatasetError: missing list file, fewer than 3 header lines, a line without a name and exactly 7
            numbers, non-numeric or non-finite values, a zero quaternion, or a listed image that is missing.
    """
    root = Path(root)
    list_file = root / f"dataset_{split}.txt"
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: list file not found")
    lines = list_file.read_text().splitlines()
    if len(lines) < 3:
        raise DatasetError(f"{list_file}: expected 3 header lines before the image lines")
    records = []
    for lineno, line in enumerate(lines[3:], 4):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 8:
            raise DatasetError(f"{list_file}:{lineno}: expected 'seqN/frameXXXXX.png X Y Z W P Q R' (name + 7 "
                               f"numbers), got {len(parts) - 1} numbers")
        try:
            vals = np.array([float(v) for v in parts[1:]])
        except ValueError:
            raise DatasetError(f"{list_file}:{lineno}: non-numeric pose value in {line.strip()!r}") from None
        if not np.all(np.isfinite(vals)) or np.linalg.norm(vals[3:]) < 1e-8:
            raise DatasetError(f"{list_file}:{lineno}: non-finite values or zero quaternion in {line.strip()!r}")
        q = vals[3:] / np.linalg.norm(vals[3:])
        q = -q if q[0] < 0 else q
        path = root / parts[0]
        if not path.is_file():
            raise DatasetError(f"{list_file}:{lineno}: image {path} not found")
        seq = parts[0].split("/")[0]
        digits = re.findall(r"\d+", Path(parts[0]).stem)
        order = float(digits[-1]) if digits else float(lineno)
        records.append(PoseRecord(parts[0], path, vals[:3], q, seq, order, root.name))
    return records


def read_seasons(kind: str, root: str | Path, split: str, slices: Sequence[int] | None = None) -> list[PoseRecord]:
    """Training (reference traversal) or test (queries with ground truth) records of a Seasons dataset."""
    ds = load_dataset(kind, root, slices)
    images = ds.database if split == "train" else [q for q in ds.queries if q.cam_from_world is not None]
    records = []
    for r in images:
        position, qvec = cam_from_world_to_pose(r.cam_from_world)
        records.append(PoseRecord(r.name, Path(r.path), position, qvec, r.sequence, r.timestamp_s, r.map_id))
    return records


def read_split(conf: DictConfig | dict, split: str) -> list[PoseRecord]:
    """Dispatch on ``conf.format`` (``7scenes``, ``cambridge``, ``cmu``, ``robotcar``) and check the result.

    Raises:
        ValueError: unknown format or split. DatasetError: no image, or several world frames (maps) at once.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    fmt = conf["format"]
    if fmt == "7scenes":
        records = read_7scenes(conf["root"], split)
    elif fmt == "cambridge":
        records = read_cambridge(conf["root"], split)
    elif fmt in ("cmu", "robotcar"):
        records = read_seasons(fmt, conf["root"], split, conf.get("slices"))
    else:
        raise ValueError(f"unknown dataset format {fmt!r}; expected one of {FORMATS}")
    if not records:
        raise DatasetError(f"{conf['root']}: no {split} images with poses")
    maps = sorted({r.map_id for r in records})
    if len(maps) > 1:
        raise DatasetError(f"{conf['root']}: {split} images come from {len(maps)} maps ({', '.join(maps)}) with "
                           "separate world frames; an APR regresses one frame: select one (e.g. data.slices=[2])")
    return records


# ---------------------------------------------------------------------------------------------------------------
# Normalisation and windows
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PoseStats:
    """Position normalisation from the training split: p_norm = (C - mean) / scale, and the mean rotation.

    Attributes:
        mean: (3,) mean camera centre, metres.
        scale: metres per normalised unit (RMS distance of the training centres to their mean, or 1).
        qvec: (4,) chordal mean world-to-camera quaternion of the training split (w >= 0); sequential models
            (VLocNet) start each test sequence from the pose (mean, qvec). Identity when unknown.
    """

    mean: np.ndarray
    scale: float
    qvec: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))

    @classmethod
    def from_records(cls, records: Sequence[PoseRecord], mode: str = "rms") -> "PoseStats":
        """``mode``: ``"rms"`` (mean-centre and scale to unit RMS distance) or ``"none"`` (mean-centre only)."""
        P = np.stack([r.position for r in records])
        mean = P.mean(0)
        if mode == "rms":
            scale = float(np.sqrt(((P - mean) ** 2).sum(1).mean()))
            scale = scale if scale > 1e-9 else 1.0
        elif mode == "none":
            scale = 1.0
        else:
            raise ValueError(f"position normalisation must be 'rms' or 'none', got {mode!r}")
        return cls(mean, scale, mean_pose(records)[1])

    def to_dict(self) -> dict[str, Any]:
        return {"mean": [float(v) for v in self.mean], "scale": float(self.scale),
                "qvec": [float(v) for v in self.qvec]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PoseStats":
        """Inverse of :meth:`to_dict`; ``qvec`` is optional (identity) for checkpoints written without it."""
        return cls(np.asarray(d["mean"], dtype=np.float64), float(d["scale"]),
                   np.asarray(d.get("qvec", [1.0, 0.0, 0.0, 0.0]), dtype=np.float64))


def mean_pose(records: Sequence[PoseRecord]) -> tuple[np.ndarray, np.ndarray]:
    """The "always predict the mean training pose" baseline: mean centre and the chordal mean rotation.

    Returns:
        position: (3,) metres. qvec: (4,) world-to-camera quaternion, w >= 0 (principal eigenvector of
        sum q q^T, the rotation minimising the summed squared chordal distances).
    """
    P = np.stack([r.position for r in records])
    return P.mean(0), average_quaternions(np.stack([r.qvec for r in records]))


def make_windows(records: Sequence[PoseRecord], steps: int, skip: int) -> list[list[int]]:
    """Temporal windows of ``steps`` frames ``skip`` frames apart, ending at every record.

    Records are grouped by sequence and sorted by ``order``. A sequence too short for the full span uses the
    largest skip that fits (at least 1); frames before the sequence start are clamped to its first frame.

    Returns:
        One list of ``steps`` record indices (oldest first) per record, in the order of ``records``.
    """
    if steps < 1 or skip < 1:
        raise ValueError(f"steps and skip must be >= 1, got {steps}, {skip}")
    by_seq: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_seq.setdefault(r.sequence, []).append(i)
    windows: dict[int, list[int]] = {}
    for idx in by_seq.values():
        idx = sorted(idx, key=lambda i: records[i].order)
        s = skip if steps == 1 else max(1, min(skip, (len(idx) - 1) // (steps - 1)))
        for k, i in enumerate(idx):
            windows[i] = [idx[max(0, k - (steps - 1 - j) * s)] for j in range(steps)]
    return [windows[i] for i in range(len(records))]


# ---------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------


def load_image(path: Path, short_side: int) -> np.ndarray:
    """Read an RGB image (:func:`fgsn.utils.io.read_image`, which detects truncated files) and resize it so that
    its shorter side is ``short_side`` pixels.

    Returns:
        uint8 (H', W', 3) RGB, min(H', W') = ``short_side``.
    Raises:
        DatasetError: missing, truncated or undecodable file (one-line message naming the file); the APR
            inference skips such a query (``predict_images(..., errors={})``).
    """
    try:
        img = read_image(path)
    except ImageReadError as e:
        raise DatasetError(" ".join(str(e).splitlines())) from None
    h, w = img.shape[:2]
    s = short_side / min(h, w)
    size = (max(short_side, round(w * s)), max(short_side, round(h * s)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                 saturation: float, hue: float) -> np.ndarray:
    """torchvision-style ColorJitter on a float (H, W, 3) RGB image in [0, 1]; factors drawn in [1-x, 1+x]
    (hue shift in [-hue, hue] of a full turn), applied in a random order."""
    ops = rng.permutation(4)
    for op in ops:
        if op == 0 and brightness > 0:
            img = img * rng.uniform(max(0, 1 - brightness), 1 + brightness)
        elif op == 1 and contrast > 0:
            gray = (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean()
            img = (img - gray) * rng.uniform(max(0, 1 - contrast), 1 + contrast) + gray
        elif op == 2 and saturation > 0:
            gray = (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
            img = (img - gray) * rng.uniform(max(0, 1 - saturation), 1 + saturation) + gray
        elif op == 3 and hue > 0:
            hsv = cv2.cvtColor(np.clip(img, 0, 1).astype(np.float32), cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-hue, hue)) % 360.0
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        img = np.clip(img, 0, 1)
    return img.astype(np.float32)


class APRDataset(torch.utils.data.Dataset):
    """Windows of images with normalised poses, for training and testing APR models.

    Each item: ``image`` (T, 3, H, W) float32 RGB in [0, 1], ``position`` (T, 3) normalised centres,
    ``qvec`` (T, 4), ``index`` (the record index of the last frame). Training: random ``crop_size`` crops and
    colour jitter; test: centre crops (the AtLoc protocol).

    Args:
        records: the split. stats: position normalisation. conf: the ``data`` configuration
            (``image_size``, ``crop_size``, ``steps``, ``skip``, ``jitter``, ``cache_images``).
        train: augment or not. seed: augmentation seed (the item index is mixed in, so runs repeat).
    """

    def __init__(self, records: Sequence[PoseRecord], stats: PoseStats, conf: DictConfig, train: bool, seed: int = 0):
        self.records = list(records)
        self.stats = stats
        self.conf = conf
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.windows = make_windows(self.records, conf.steps, conf.skip)
        self._cache: dict[int, np.ndarray] = {}
        self.crop = tuple(conf.crop_size) if not isinstance(conf.crop_size, int) else (conf.crop_size,) * 2

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, i: int) -> np.ndarray:
        if i in self._cache:
            return self._cache[i]
        img = load_image(self.records[i].path, self.conf.image_size)
        if self.conf.cache_images:
            self._cache[i] = img
        return img

    def _crop(self, img: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        ch, cw = self.crop
        h, w = img.shape[:2]
        if h < ch or w < cw:
            s = max(ch / h, cw / w)
            img = cv2.resize(img, (max(cw, round(w * s)), max(ch, round(h * s))), interpolation=cv2.INTER_LINEAR)
            h, w = img.shape[:2]
        y = rng.integers(0, h - ch + 1) if rng is not None else (h - ch) // 2
        x = rng.integers(0, w - cw + 1) if rng is not None else (w - cw) // 2
        return img[y:y + ch, x:x + cw]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        images, positions, quats = [], [], []
        for i in self.windows[index]:
            img = self._crop(self._image(i), rng).astype(np.float32) / 255.0
            if self.train and any(v > 0 for v in self.conf.jitter):
                img = color_jitter(img, rng, *self.conf.jitter)
            images.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
            r = self.records[i]
            positions.append((r.position - self.stats.mean) / self.stats.scale)
            quats.append(r.qvec)
        return {"image": torch.stack(images),
                "position": torch.as_tensor(np.stack(positions), dtype=torch.float32),
                "qvec": torch.as_tensor(np.stack(quats), dtype=torch.float32),
                "index": torch.tensor(index)}
