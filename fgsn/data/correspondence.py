"""Cross-season correspondence data (Larsson et al., ICCV 2019; the CMU / RobotCar correspondence datasets).

Layout under ``root`` (see the data README)::

    sliceN/correspondence_data/correspondence_sliceN_runref_run<cond>_c<i>_c<j>.mat   # HDF5 (MATLAB v7.3)
    sliceN/images/<im_i_path>    # reference-traversal image
    sliceN/images/<im_j_path>    # image under another condition

Fields of a ``.mat`` file: ``im_i_path``, ``im_j_path`` (uint16 character codes, (L, 1)), ``pt_i``, ``pt_j``
((N, 2) float64, x then y, 0-based pixels, integer = pixel centre), ``dist_from_center`` ((N, 1)).

One *sample* is one file (an image pair). Samples are split 70/30 into train / validation by a seeded
permutation (without replacement). A training example is a pair of crops, each centred (with a random jitter,
**ours**) on its own end of one random correspondence; correspondences with either end outside its crop are
dropped.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..utils.config import between, merge_defaults
from ..utils.errors import UserError
from ..utils.io import read_image
from .image import resize_short_side, scale_points

logger = logging.getLogger(__name__)


class CorrespondenceFileError(UserError, ValueError):
    """A correspondence ``.mat`` file is unreadable, not HDF5, or lacks or malforms a field; names the file."""


@dataclass
class CorrespondenceSample:
    """One image pair: ``pt_ref[k]`` and ``pt_tgt[k]`` (pixels, x y, original resolution) see one 3D point."""

    ref_path: Path
    tgt_path: Path
    ref_name: str  # path relative to the slice's images/ folder, prefixed by the slice folder name
    tgt_name: str
    pt_ref: np.ndarray  # (N, 2) float64
    pt_tgt: np.ndarray  # (N, 2) float64
    source: Path


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _field(path: Path, f: h5py.File, key: str, required: bool = True) -> np.ndarray | None:
    """Dataset ``key`` of the open file as a numeric array; None for a missing optional one.

    Raises:
        CorrespondenceFileError: a required field missing, not a dataset, not numeric, or unreadable (a
            corrupt file).
    """
    try:
        if key not in f:
            if required:
                raise CorrespondenceFileError(f"{path}: no field {key!r}")
            return None
        ds = f[key]
        if not isinstance(ds, h5py.Dataset):
            raise CorrespondenceFileError(f"{path}: field {key!r} is not a dataset")
        a = np.asarray(ds[()])
    except CorrespondenceFileError:
        raise
    except (KeyError, OSError, RuntimeError, TypeError, ValueError) as e:  # h5py's errors on a corrupt file
        raise CorrespondenceFileError(f"{path}: cannot read field {key!r} ({_one_line(e)})") from None
    if a.dtype.kind not in "biuf":
        raise CorrespondenceFileError(f"{path}: field {key!r} is not numeric (dtype {a.dtype})")
    return a


def _decode(path: Path, key: str, codes: np.ndarray) -> str:
    """MATLAB characters (integer codes) -> str."""
    codes = codes.ravel()
    if codes.size and not (np.isfinite(codes).all() and (codes == np.trunc(codes)).all()
                           and codes.min() >= 0 and codes.max() <= sys.maxunicode):
        raise CorrespondenceFileError(f"{path}: field {key!r} holds values that are not character codes")
    return "".join(chr(int(c)) for c in codes)


def read_correspondence_file(path: str | Path) -> dict:
    """Read one correspondence ``.mat`` (HDF5) file.

    Returns:
        dict with ``im_i_path``, ``im_j_path`` (str), ``pt_i``, ``pt_j`` ((N, 2) float64, x y), ``dist_from_center``
        ((N,) float64).
    Raises:
        CorrespondenceFileError: (a ValueError) the file is missing, not HDF5 or corrupt; a field is missing,
            not numeric or holds no character codes; the point arrays are not (N, 2) of equal length. The
            message names the file.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as e:  # missing, not HDF5, a truncated or corrupt superblock
        raise CorrespondenceFileError(f"{path}: cannot open as an HDF5 (MATLAB v7.3) file ({_one_line(e)})") from None
    with f:
        out = {k: _decode(path, k, _field(path, f, k)) for k in ("im_i_path", "im_j_path")}
        for k in ("pt_i", "pt_j"):
            a = _field(path, f, k).astype(np.float64)
            if a.ndim == 2 and a.shape[0] == 2 and a.shape[1] != 2:
                a = a.T
            out[k] = a.reshape(-1, 2) if a.size == 0 else a
        if out["pt_i"].ndim != 2 or out["pt_i"].shape[1] != 2 or out["pt_i"].shape != out["pt_j"].shape:
            raise CorrespondenceFileError(f"{path}: bad point arrays {out['pt_i'].shape} / {out['pt_j'].shape}")
        dist = _field(path, f, "dist_from_center", required=False)
        out["dist_from_center"] = (dist.astype(np.float64).ravel() if dist is not None
                                   else np.zeros(len(out["pt_i"])))
    return out


def load_samples(root: str | Path, slices: list[str] | None = None) -> list[CorrespondenceSample]:
    """All correspondence samples under ``root`` (sorted by file name).

    Args:
        root: folder holding ``sliceN/`` folders.
        slices: optional slice folder names to keep (e.g. ``["slice1"]``).
    Raises:
        FileNotFoundError: no ``.mat`` file found.
        CorrespondenceFileError: a malformed file (:func:`read_correspondence_file`).
    """
    root = Path(root)
    files = sorted(root.glob("*/correspondence_data/*.mat"))
    if slices:
        files = [f for f in files if f.parent.parent.name in set(slices)]
    if not files:
        raise FileNotFoundError(f"No correspondence files under {root}")
    samples = []
    for f in files:
        d = read_correspondence_file(f)
        sl = f.parent.parent
        samples.append(CorrespondenceSample(
            ref_path=sl / "images" / d["im_i_path"], tgt_path=sl / "images" / d["im_j_path"],
            ref_name=f"{sl.name}/{d['im_i_path']}", tgt_name=f"{sl.name}/{d['im_j_path']}",
            pt_ref=d["pt_i"], pt_tgt=d["pt_j"], source=f))
    return samples


def split_samples(n: int, val_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train / validation without replacement.

    Returns:
        (train_idx, val_idx), disjoint, sorted, covering range(n); len(val) = round(n * val_fraction).
    """
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def crop_around(image: np.ndarray, center_xy: np.ndarray, size: int, rng: np.random.Generator, jitter: float,
                pad_value) -> tuple[np.ndarray, np.ndarray]:
    """Crop a ``size`` x ``size`` window containing ``center_xy``.

    The window is centred on the point plus a uniform jitter of +-``jitter * size / 2`` pixels, then shifted to
    lie inside the image where possible; images smaller than the crop are padded with ``pad_value``
    (bottom/right).

    Returns:
        The crop (size, size, ...) and its offset (x0, y0): crop pixel (u, v) = image pixel (u + x0, v + y0).
    """
    h, w = image.shape[:2]
    off = rng.uniform(-1, 1, 2) * jitter * size / 2
    x0 = int(round(center_xy[0] + off[0] - (size - 1) / 2))
    y0 = int(round(center_xy[1] + off[1] - (size - 1) / 2))
    x0 = min(max(x0, 0), max(w - size, 0))
    y0 = min(max(y0, 0), max(h - size, 0))
    # keep the point inside even with jitter
    x0 = min(max(x0, int(np.ceil(center_xy[0])) - size + 1), int(np.floor(center_xy[0]))) if w > size else x0
    y0 = min(max(y0, int(np.ceil(center_xy[1])) - size + 1), int(np.floor(center_xy[1]))) if h > size else y0
    crop = np.full((size, size) + image.shape[2:], pad_value, dtype=image.dtype)
    part = image[y0:y0 + size, x0:x0 + size]
    crop[:part.shape[0], :part.shape[1]] = part
    return crop, np.array([x0, y0])


def points_in_crop(points: np.ndarray, offset: np.ndarray, size: int, image_hw) -> np.ndarray:
    """(N,) bool: the point, rounded to its pixel, is inside the crop and inside the image.

    Rounded in crop coordinates, as the losses read it (``round(p - offset)``): with round-half-to-even,
    ``round(p) - offset`` differs at exact .5 coordinates when the offset is odd, which put points on the pixel
    just outside the crop."""
    loc = np.round(np.asarray(points) - offset).astype(np.int64)
    xy = loc + offset
    h, w = image_hw
    return ((loc >= 0) & (loc < size)).all(1) & (xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] < w) & (xy[:, 1] < h)


class CorrespondenceDataset:
    """Cross-season correspondence pairs, resized, with crop sampling (batch size 1, no DataLoader needed)."""

    default_conf = {
        "root": "???",  # folder holding sliceN/ folders
        "slices": None,  # list of slice folder names to use; null = all
        "resize_short": 1024,  # shorter image side after resizing, pixels (paper: 1024)
        "crop_size": 713,  # training crop side, pixels
        "crop_jitter": 0.5,  # random shift of the crop centre, fraction of half the crop size (ours)
        "val_fraction": 0.3,  # fraction of samples (image pairs) held out for validation
        "split_seed": 0,  # seed of the train / validation permutation
        "min_points": 1,  # pairs with fewer correspondences are not used
        "cache_images": True,  # keep resized images in memory
    }
    conf_checks = {"resize_short": between(1, integer=True), "crop_size": between(1, integer=True),
                   "crop_jitter": between(0, 1), "val_fraction": between(0, 1, hi_open=True),
                   "min_points": between(0, integer=True)}

    def __init__(self, conf):
        self.conf = merge_defaults(self.default_conf, conf, self.conf_checks, "data configuration")
        samples = [s for s in load_samples(self.conf.root, self.conf.slices) if len(s.pt_ref) >= self.conf.min_points]
        self.samples = samples
        self.train_idx, self.val_idx = split_samples(len(samples), self.conf.val_fraction, self.conf.split_seed)
        self._cache: dict[Path, tuple[np.ndarray, float]] = {}
        logger.info("Correspondence data: %d pairs (%d train, %d val) under %s", len(samples), len(self.train_idx),
                    len(self.val_idx), self.conf.root)

    def reference_images(self) -> dict[str, Path]:
        """Unique reference images {name: path} of all samples, sorted by name."""
        return dict(sorted({s.ref_name: s.ref_path for s in self.samples}.items()))

    def load(self, path: Path) -> tuple[np.ndarray, float]:
        """Resized (H, W, 3) uint8 RGB image and its scale."""
        if path in self._cache:
            return self._cache[path]
        img, s = resize_short_side(read_image(path), self.conf.resize_short)
        if self.conf.cache_images:
            self._cache[path] = (img, s)
        return img, s

    def points(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """Correspondences of sample ``idx`` in resized coordinates: (N, 2) ref and (N, 2) target."""
        s = self.samples[idx]
        _, sr = self.load(s.ref_path)
        _, st = self.load(s.tgt_path)
        return scale_points(s.pt_ref, sr), scale_points(s.pt_tgt, st)

    def sample_crops(self, idx: int, rng: np.random.Generator) -> dict:
        """A training example from sample ``idx``.

        Returns:
            ``image_ref``, ``image_tgt``: (S, S, 3) uint8 crops; ``offset_ref``, ``offset_tgt``: (2,) crop origin
            (x0, y0) in the resized image; ``pt_ref``, ``pt_tgt``: (M, 2) correspondences in crop pixels (both ends
            inside their crops); ``px_ref``, ``px_tgt``: (M, 2) int64 the same rounded to pixels (the pixels the
            losses read: :func:`points_in_crop` checked exactly these); ``ref_name``; ``ref_shape``: (H, W) of the
            resized reference image.
        """
        s = self.samples[idx]
        img_r, _ = self.load(s.ref_path)
        img_t, _ = self.load(s.tgt_path)
        pr, pt = self.points(idx)
        k = rng.integers(len(pr))
        size, pad = self.conf.crop_size, np.array([124, 117, 104], dtype=np.uint8)  # mean colour
        crop_r, off_r = crop_around(img_r, pr[k], size, rng, self.conf.crop_jitter, pad)
        crop_t, off_t = crop_around(img_t, pt[k], size, rng, self.conf.crop_jitter, pad)
        keep = points_in_crop(pr, off_r, size, img_r.shape[:2]) & points_in_crop(pt, off_t, size, img_t.shape[:2])
        pr_c, pt_c = pr[keep] - off_r, pt[keep] - off_t
        return {"image_ref": crop_r, "image_tgt": crop_t, "offset_ref": off_r, "offset_tgt": off_t,
                "pt_ref": pr_c, "pt_tgt": pt_c, "px_ref": np.round(pr_c).astype(np.int64),
                "px_tgt": np.round(pt_c).astype(np.int64), "ref_name": s.ref_name,
                "ref_shape": img_r.shape[:2], "index": idx, "pt_ref_image": pr[keep]}
