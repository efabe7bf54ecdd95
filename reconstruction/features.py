"""SIFT feature extraction (pycolmap) to a resumable HDF5 cache, in the style of hloc's ``extract_features``.

HDF5 schema of ``feats-sift-n<max_num_features>-pt<peak_threshold>.h5``: one group per image, named by the image key (its path
relative to the dataset root, ``/`` creating nested groups), with

    keypoints    (N, 2) float32   pixel coordinates (x, y) in the raw (distorted) image; integer = pixel centre
    scales       (N,)   float32   SIFT scale, pixels
    orientations (N,)   float32   SIFT orientation, radians
    descriptors  (N, 128) uint8   RootSIFT (L1-root) descriptors scaled by 512 as in COLMAP
    attrs: image_size = (width, height)

    file attrs: failed_images  JSON object {key: error message} of the images that could not be read when
                               :func:`main` ran with ``skip_errors`` (absent while none failed); read it with
                               :func:`failed_images`

Images already present are skipped unless ``overwrite``, so an interrupted run resumes where it stopped. Each
image is written atomically to its own part file before the next starts, and the step ends by adding the parts
to the file in one atomic replace (:class:`fgsn.utils.io.H5GroupWriter`): an error loses nothing already
extracted, and a run killed at any point leaves the file complete and its finished images for the next run. Images that
failed are not in the file, so every call tries them again (and drops them from ``failed_images`` once read).
"""
from __future__ import annotations

import functools
import json
import logging
import warnings
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np
from omegaconf import OmegaConf

from fgsn.utils.config import between
from fgsn.utils.io import H5GroupWriter, ImageReadError, read_image
from fgsn.utils.logging import progress
from fgsn.utils.parallel import Engine

from .camera import from_colmap_pixels

logger = logging.getLogger(__name__)

default_conf = {
    "max_num_features": 8192,  # keep at most this many SIFT features per image (strongest first)
    "peak_threshold": 0.0066667,  # SIFT DoG peak threshold (COLMAP default 0.02/3)
    "num_threads": 1,  # CPU threads used by pycolmap's SIFT
}
conf_checks = {  # fgsn.utils.config.check_conf
    "max_num_features": between(1, integer=True),
    "peak_threshold": between(0, lo_open=True),
    "num_threads": between(-1, integer=True),  # pycolmap: -1 = all cores
}


def feature_filename(conf) -> str:
    """Artifact name carrying the settings, e.g. ``feats-sift-n8192-pt0.0067.h5``."""
    return f"feats-sift-n{int(conf['max_num_features'])}-pt{float(conf['peak_threshold']):.2g}.h5"


class SiftExtractor:
    """pycolmap's CPU SIFT (Lowe 2004; COLMAP's implementation with L1-root normalisation)."""

    def __init__(self, conf=None):
        import pycolmap

        conf = OmegaConf.merge(OmegaConf.create(default_conf), conf or {})
        opts = pycolmap.FeatureExtractionOptions()
        opts.num_threads = int(conf.num_threads)
        opts.sift.max_num_features = int(conf.max_num_features)
        opts.sift.peak_threshold = float(conf.peak_threshold)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Sift returns NumPy arrays; its successor does not
            self._sift = pycolmap.Sift(opts, pycolmap.Device.cpu)

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """(H, W) uint8 grey image -> dict of keypoints (N, 2), scales (N,), orientations (N,), descriptors (N, 128)."""
        if image.ndim != 2:
            raise ValueError(f"expected a (H, W) grey image, got shape {image.shape}")
        kp, desc = self._sift.extract(np.ascontiguousarray(image, dtype=np.float32) / 255.0)
        return {
            "keypoints": from_colmap_pixels(kp[:, :2]).astype(np.float32),
            "scales": kp[:, 2].astype(np.float32),
            "orientations": kp[:, 3].astype(np.float32),
            "descriptors": np.clip(np.round(desc * 512.0), 0, 255).astype(np.uint8),
        }


def _extract_batch(conf, batch: list[tuple[str, Path]]) -> list[tuple[str, dict | None, dict | str]]:
    """(key, features, {"image_size": (w, h)}) per image of ``batch``, or (key, None, error message)."""
    extractor = _extractor(json.dumps(conf, sort_keys=True))
    out = []
    for key, path in batch:
        try:
            image = read_image(path, grayscale=True)
        except ImageReadError as e:
            out.append((key, None, str(e)))
            continue
        out.append((key, extractor(image), {"image_size": (image.shape[1], image.shape[0])}))
    return out


@functools.lru_cache(maxsize=2)
def _extractor(conf_json: str) -> SiftExtractor:
    """One extractor per process and configuration (batches reuse it)."""
    return SiftExtractor(json.loads(conf_json))


def main(conf, images: Iterable[tuple[str, Path]], feature_path: Path, overwrite: bool = False,
         skip_errors: bool = False, engine: Engine | None = None) -> Path:
    """Extract SIFT for every (key, path) pair into ``feature_path`` (the features step).

    Args:
        conf: see :data:`default_conf`.
        images: (key, image path) pairs; the key names the HDF5 group.
        feature_path: output HDF5 file (created or appended; schema in the module docstring).
        overwrite: re-extract images already present.
        skip_errors: log unreadable images and go on, recording them in the file's ``failed_images`` attribute
            (:func:`failed_images`), instead of raising.
        engine: extract on its Dask workers in batches (:class:`fgsn.utils.parallel.Engine`); this process stays
            the only writer, each image written as its batch completes (same groups as a serial run; the file's
            group order may differ). None: in this process.
    Returns:
        ``feature_path``.
    Raises:
        ImageReadError: an unreadable image, when not ``skip_errors``; everything before it is kept.
    """
    feature_path = Path(feature_path)
    images = list(images)
    writer = H5GroupWriter(feature_path)
    if overwrite:
        writer.discard()
    done = set() if overwrite else keys_in(feature_path, [k for k, _ in images]) | set(writer.pending())
    todo = [(k, p) for k, p in images if k not in done]
    logger.info("SIFT: %d of %d images to extract into %s.", len(todo), len(images), feature_path)
    if not todo:
        return writer.commit()  # the images of a killed run (or an empty file)
    failed = failed_images(feature_path)
    before = dict(failed)
    engine = engine or Engine()
    results = engine.imap(_extract_batch, todo, OmegaConf.to_container(OmegaConf.create(conf)), batch_size=8)
    try:
        for key, feats, attrs in progress(results, total=len(todo), desc="SIFT", unit="img", log=logger):
            if feats is None:
                if not skip_errors:
                    raise ImageReadError(attrs)
                logger.error("%s", attrs)
                failed[key] = attrs
                continue
            failed.pop(key, None)
            write_group(writer, key, feats, attrs)
    finally:  # the images done so far go into the file, also when one raised
        writer.commit({} if failed == before else
                      {"failed_images": json.dumps(failed, sort_keys=True) if failed else None})
    return feature_path


def keys_in(path: Path, keys: Iterable[str]) -> set[str]:
    """The ``keys`` that name a group of the HDF5 file ``path`` (none when it does not exist)."""
    if not Path(path).exists():
        return set()
    with h5py.File(path, "r") as f:
        return {k for k in keys if k in f}


def write_group(writer: H5GroupWriter, name: str, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> None:
    """Write one group of a resumable per-image HDF5 file (:class:`fgsn.utils.io.H5GroupWriter`: atomically,
    pending until the writer's commit; a group of that name is replaced).

    Args:
        writer: the file's writer.
        name: group name (an image key; ``/`` creates nested groups).
        arrays: dataset name -> array, written in this order.
        attrs: group attributes.
    """
    with writer.group(name) as grp:
        for k, v in arrays.items():
            grp.create_dataset(k, data=v)
        grp.attrs.update(attrs or {})


def failed_images(feature_path: Path, keys: Iterable[str] | None = None) -> dict[str, str]:
    """Images that :func:`main` could not read (``skip_errors``), from the file's ``failed_images`` attribute.

    Args:
        feature_path: a feature file; a missing file has no failed images.
        keys: only report these keys (default: every failed image).
    Returns:
        key -> error message.
    """
    feature_path = Path(feature_path)
    if not feature_path.exists():
        return {}
    with h5py.File(feature_path, "r") as f:  # an image read since (a call that raised later) no longer counts
        failed = {k: v for k, v in json.loads(f.attrs.get("failed_images", "{}")).items() if k not in f}
    return failed if keys is None else {k: failed[k] for k in keys if k in failed}


def read_features(feature_path: Path, key: str, fields: tuple[str, ...] = ("keypoints", "descriptors")) -> dict[str, np.ndarray]:
    """Read the given fields of one image from a feature file.

    Raises:
        KeyError: the image is not in the file (names both).
    """
    with h5py.File(feature_path, "r") as f:
        if key not in f:
            raise KeyError(f"{feature_path}: no features for image {key}")
        return {k: f[key][k][()] for k in fields}
