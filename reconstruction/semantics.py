"""Semantic label sources for the semantic localizers: one label file holding every database and query image.

The label step is :func:`main`: it writes (or checks) the label file that :func:`labels_path` names; read it with
:class:`LabelReader`. The semantic input is pluggable (``conf.source``):

- ``checkpoint``: segment the images with an FGSN or any PSPNet checkpoint (fine-grained clusters, or a coarse
  semantic network such as the CamVid-pretrained one from ``fgsn-loc pretrain-seg``), with the sliding window
  of :mod:`fgsn.segment`; the label file is cached in the work folder and resumable per image;
- ``labels``: a precomputed label file (``fgsn-loc segment`` schema) whose names are the images' keys
  (paths relative to the dataset root: ``fgsn-loc segment --images DATASET_ROOT`` writes exactly these).

Precomputed label PNGs (e.g. the demo dataset's ground-truth semantics) become a label file with
:func:`labels_from_pngs`.

The label file follows :mod:`fgsn.segment`'s schema: one group per image key with ``labels`` (H, W) at the
image's own resolution, file attribute ``num_classes``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import h5py
import numpy as np

from fgsn.utils.config import between, one_of
from fgsn.utils.io import H5GroupWriter

from .records import DatasetError

logger = logging.getLogger(__name__)

default_conf = {
    "source": "checkpoint",  # checkpoint: segment with an FGSN / PSPNet checkpoint; labels: a precomputed label file
    "checkpoint": None,  # FGSN / PSPNet checkpoint (.pt) for source=checkpoint
    "labels": None,  # label HDF5 file (fgsn-loc segment schema, names = image keys) for source=labels
    "name": None,  # short name of the label source in artifact names; default: derived from the path
    "segment": {  # sliding-window inference settings for source=checkpoint (use the network's training ones)
        "resize_short": 1024,  # shorter image side fed to the network, pixels (paper: 1024)
        "patch": 713,  # sliding-window patch side, pixels (paper: 713)
        "step": 476,  # sliding-window stride, pixels (paper: 476)
        "batch_size": 4,  # windows per forward pass
        "device": "auto",  # auto (cuda when present), cpu or cuda
    },
}
conf_checks = {  # fgsn.utils.config.check_conf
    "source": one_of("checkpoint", "labels"),
    "segment": {"resize_short": between(1, integer=True), "patch": between(1, integer=True),
                "step": between(1, integer=True), "batch_size": between(1, integer=True)},
}


def source_name(conf) -> str:
    """Short, file-name-safe name of the label source (``conf.name``, else from the checkpoint or label path).

    A checkpoint ``outputs/train-fgsn/fgsn-cpu-k20/checkpoints/best.pt`` is named after its experiment folder
    (``fgsn-cpu-k20``) plus the inference resolution, so that two networks or two resolutions never share a cache.
    """
    if conf.get("name"):
        name = str(conf.name)
    elif conf.source == "checkpoint":
        if not conf.checkpoint:
            raise ValueError("semantics.source=checkpoint needs semantics.checkpoint=PATH (or use source=labels)")
        p = Path(conf.checkpoint)
        name = (p.parent.parent.name if p.parent.name == "checkpoints" else p.parent.name) + f"-{p.stem}"
        name += f"-s{conf.segment.resize_short}"
    elif conf.source == "labels":
        if not conf.labels:
            raise ValueError("semantics.source=labels needs semantics.labels=PATH")
        name = Path(conf.labels).stem.removeprefix("labels-")
    else:
        raise ValueError(f"semantics.source must be 'checkpoint' or 'labels', got {conf.source!r}")
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def labels_path(conf, cache_dir: Path) -> Path:
    """Where the label file of ``conf`` is (``labels``) or will be written (``cache_dir/labels-<name>.h5``)."""
    if conf.source == "labels":
        source_name(conf)  # validates
        return Path(conf.labels)
    return Path(cache_dir) / f"labels-{source_name(conf)}.h5"


def _names_in(path: Path) -> set[str]:
    """Image names already in a label file (none when it does not exist yet)."""
    from fgsn.segment import list_names

    return set(list_names(path)) if path.exists() else set()


def main(conf, images: Iterable[tuple[str, Path]], output: Path, overwrite: bool = False, engine=None) -> Path:
    """The label step: make sure the label file ``output`` holds every image (named by its key).

    ``source=checkpoint`` segments the images missing from ``output`` (resumable per image; all of them with
    ``overwrite``); ``source=labels`` only checks that the precomputed file has every image.

    Args:
        conf: see :data:`default_conf`.
        images: (image key, image path) pairs of the database and query images that need labels.
        output: the label file: :func:`labels_path` of ``conf`` (for ``source=labels`` that is ``conf.labels``).
        overwrite: segment images already in ``output`` again (``source=checkpoint``; nothing is written for
            ``source=labels``).
        engine: segment on its Dask workers (:class:`fgsn.utils.parallel.Engine`, see
            :func:`fgsn.segment.segment_images`); None: in this process.
    Returns:
        ``output``.
    Raises:
        ValueError: ``source=labels`` and ``output`` is not ``conf.labels``.
        DatasetError: ``source=labels`` and the file is missing or lacks some images (names the first few).
        FileNotFoundError: the checkpoint does not exist.
    """
    output = Path(output)
    images = list(images)
    source_name(conf)  # validates the source
    if conf.source == "labels":
        if output != Path(conf.labels):
            raise ValueError(f"semantics.source=labels reads {conf.labels}, not {output}")
        if not output.is_file():
            raise DatasetError(f"{output}: label file not found")
        present = _names_in(output)
        missing = [k for k, _ in images if k not in present]
        if missing:
            raise DatasetError(f"{output}: no labels for {len(missing)} of {len(images)} images, e.g. {missing[:3]} "
                               "(names must be image paths relative to the dataset root)")
        return output
    ckpt = Path(conf.checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: segmentation checkpoint not found")
    done = set() if overwrite else _names_in(output)
    todo = [(k, p) for k, p in images if k not in done]
    if todo:
        from fgsn.models import PSPNet
        from fgsn.segment import segment_images

        logger.info("Segmenting %d images with %s into %s.", len(todo), ckpt, output)
        model = PSPNet.from_checkpoint(ckpt)
        segment_images(model, [p for _, p in todo], output, names=[k for k, _ in todo], conf=dict(conf.segment),
                       overwrite=overwrite, engine=engine, attrs={"checkpoint": str(ckpt)})
    return output


class LabelReader:
    """Reads label maps of a label file by image key; picklable (the file is opened lazily in each process).

    Args:
        path: label HDF5 file (:mod:`fgsn.segment` schema).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with h5py.File(self.path, "r") as f:
            if "num_classes" not in f.attrs:
                raise DatasetError(f"{self.path}: not a label file (no num_classes attribute)")
            self.num_classes = int(f.attrs["num_classes"])
        self._file = None

    def __getstate__(self):
        return {**self.__dict__, "_file": None}

    def _f(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def labels(self, key: str) -> np.ndarray:
        """(H, W) int64 label map of image ``key``. Raises KeyError naming the file when absent."""
        f = self._f()
        if key not in f or "labels" not in f[key]:
            raise KeyError(f"{self.path}: no labels for {key!r}")
        return f[key]["labels"][()].astype(np.int64)

    def at(self, key: str, keypoints: np.ndarray) -> np.ndarray:
        """(N,) int64 labels at (N, 2) pixel coordinates (x, y; integer = pixel centre; rounded, clipped)."""
        return labels_at(self.labels(key), keypoints)


def labels_at(label_map: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Labels of a (H, W) map at (N, 2) pixel coordinates (x, y), integer = pixel centre; rounded and clipped.

    Raises:
        ValueError: ``keypoints`` is not (N, 2).
    """
    keypoints = np.asarray(keypoints)
    if keypoints.ndim != 2 or keypoints.shape[1] != 2:
        raise ValueError(f"keypoints must be (N, 2), got {keypoints.shape}")
    H, W = label_map.shape[:2]
    x = np.clip(np.rint(keypoints[:, 0]).astype(np.int64), 0, W - 1)
    y = np.clip(np.rint(keypoints[:, 1]).astype(np.int64), 0, H - 1)
    return label_map[y, x].astype(np.int64)


def labels_from_pngs(items: Sequence[tuple[str, Path]], out_path: Path, num_classes: int,
                     overwrite: bool = False) -> Path:
    """Write precomputed label PNGs (single channel, one label per pixel) to a label file; resumable.

    Args:
        items: (image key, PNG path) pairs.
        out_path: label HDF5 file.
        num_classes: number of labels K (labels must be < K).
    Raises:
        DatasetError: a PNG is missing, unreadable, not single-channel or has a label >= K (names the file).
    """
    out_path = Path(out_path)
    writer = H5GroupWriter(out_path)  # kill-safe, as fgsn.segment
    if overwrite:
        writer.discard()
    done = set() if overwrite else _names_in(out_path) | set(writer.pending())
    try:
        for key, png in items:
            if key in done:
                continue
            lab = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
            if lab is None:
                raise DatasetError(f"{png}: label image missing or unreadable")
            if lab.ndim != 2:
                raise DatasetError(f"{png}: label image must be single-channel, got shape {lab.shape}")
            if lab.max(initial=0) >= num_classes:
                raise DatasetError(f"{png}: label {int(lab.max())} >= num_classes {num_classes}")
            with writer.group(key) as g:
                g.create_dataset("labels", data=lab.astype(np.uint8 if num_classes <= 256 else np.uint16),
                                 compression="gzip", compression_opts=4)
                g.attrs["num_classes"] = int(num_classes)
                g.attrs["image_size"] = (lab.shape[1], lab.shape[0])
    finally:  # the images done so far, also when a PNG is bad
        writer.commit({"num_classes": int(num_classes)})
    return out_path
