"""Street-scene semantic segmentation data in the CamVid (SegNet tutorial) layout.

Layout under ``root``: ``train.txt`` / ``val.txt`` / ``test.txt`` with lines ``<image> <label>`` (paths relative
to ``root``); labels are single-channel PNGs with class ids 0..10 and ``void`` = 11 (ignored): 0 sky,
1 building, 2 pole, 3 road, 4 pavement, 5 tree, 6 sign/symbol, 7 fence, 8 car, 9 pedestrian, 10 bicyclist.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..utils.io import read_image
from .image import resize_short_side

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian",
                  "bicyclist")
CAMVID_VOID = 11


def read_split(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, label) path pairs of a split. Raises FileNotFoundError if the list is missing."""
    root = Path(root)
    lst = root / f"{split}.txt"
    if not lst.is_file():
        raise FileNotFoundError(f"No split list {lst}")
    pairs = []
    for line in lst.read_text().splitlines():
        if line.strip():
            a, b = line.split()[:2]
            pairs.append((root / a.lstrip("/"), root / b.lstrip("/")))
    return pairs


def read_label(path: str | Path) -> np.ndarray:
    """(H, W) uint8 class ids. Raises FileNotFoundError if unreadable."""
    lab = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if lab is None:
        raise FileNotFoundError(f"Cannot read label image {path}")
    return lab


class CamVidDataset:
    """Images and labels of one split, resized (labels with nearest neighbour), cached in memory."""

    def __init__(self, root: str | Path, split: str = "train", resize_short: int | None = None):
        self.pairs = read_split(root, split)
        self.resize_short = resize_short
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB image and (H, W) int64 labels with void mapped to -1."""
        if i not in self._cache:
            img, _ = resize_short_side(read_image(self.pairs[i][0]), self.resize_short)
            lab, _ = resize_short_side(read_label(self.pairs[i][1]), self.resize_short, cv2.INTER_NEAREST)
            lab = lab.astype(np.int64)
            lab[lab >= CAMVID_VOID] = -1
            self._cache[i] = (img, lab)
        return self._cache[i]

    def random_crop(self, i: int, size: int, rng: np.random.Generator, flip: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
        """A random ``size`` x ``size`` crop (padded with the mean colour / -1 when the image is smaller)."""
        img, lab = self[i]
        h, w = lab.shape
        y0 = int(rng.integers(0, max(h - size, 0) + 1))
        x0 = int(rng.integers(0, max(w - size, 0) + 1))
        ci = np.empty((size, size, 3), np.uint8)
        ci[:] = (124, 117, 104)
        cl = np.full((size, size), -1, np.int64)
        pi, pl = img[y0:y0 + size, x0:x0 + size], lab[y0:y0 + size, x0:x0 + size]
        ci[:pi.shape[0], :pi.shape[1]] = pi
        cl[:pl.shape[0], :pl.shape[1]] = pl
        if flip and rng.random() < 0.5:
            ci, cl = ci[:, ::-1].copy(), cl[:, ::-1].copy()
        return ci, cl
