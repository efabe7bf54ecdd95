"""The 3D map: an SfM model (COLMAP or NVM) loaded into pycolmap, and per-3D-point descriptors for 2D-3D matching.

Descriptors come from the database observations: each observation of a 3D point is associated with our SIFT
keypoint nearest to it in that database image (within ``assoc_radius_px``), and that keypoint's descriptor is
kept. A point therefore has as many descriptors as associated observations (hloc-style "track descriptors").

HDF5 schema of ``map-<map_id>-<features>.h5``:

    xyz          (M, 3) float64  3D points, world frame, metres
    point3D_ids  (M,)   int64    ids in the pycolmap model
    descriptors  (D, 128) uint8  one per associated observation
    owner        (D,)   int32    row in ``xyz`` of the point each descriptor describes
    d_min, d_max (M,)   float32  smallest / largest distance to an observing database camera, metres
    view_dir     (M, 3) float32  mean unit viewing direction (point -> camera), world frame
    view_spread  (M,)   float32  largest angle between an observing direction and ``view_dir``, radians
    attrs: map_id, num_images
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np
from scipy.spatial import cKDTree

from fgsn.utils.config import between
from fgsn.utils.io import write_h5_atomic
from fgsn.utils.parallel import Engine

from .camera import from_colmap_pixels
from .datasets import SeasonsDataset
from .geometry import camera_center
from .records import DatasetError, ImageRecord

logger = logging.getLogger(__name__)

default_conf = {
    "assoc_radius_px": 1.5,  # max distance between a model observation and our keypoint, pixels
}
conf_checks = {"assoc_radius_px": between(0, lo_open=True)}  # fgsn.utils.config.check_conf

COLMAP_FILES = ("cameras", "images", "points3D")


def load_reconstruction(dataset: SeasonsDataset, map_id: str):
    """Load the model of ``map_id`` into a ``pycolmap.Reconstruction``.

    Raises:
        DatasetError: model missing (suggests ``fgsn-loc build-map``) or unreadable, naming the path.
    """
    import pycolmap

    src = dataset.maps[map_id]
    if src.format == "nvm":
        from .nvm import read_nvm

        by_key = {str(Path(r.key).relative_to("images").with_suffix("")): r for r in dataset.database_for_map(map_id)}

        def camera_of(key: str):
            rec = by_key.get(key)
            if rec is None:
                raise DatasetError(f"{src.model_path}: model image {key} is not a database image of {dataset.root}")
            return rec.key, rec.camera

        return read_nvm(src.model_path, camera_of, src.model)
    path = src.model_path
    if not path.is_dir():
        raise DatasetError(f"{path}: COLMAP model folder not found; build one with `fgsn-loc build-map`")
    for stem in COLMAP_FILES:
        if not ((path / f"{stem}.bin").is_file() or (path / f"{stem}.txt").is_file()):
            raise DatasetError(f"{path}: model file {stem}.bin (or .txt) is missing")
    try:
        return pycolmap.Reconstruction(path)
    except Exception as e:
        raise DatasetError(f"{path}: cannot read COLMAP model ({e})") from None


def database_records_by_image(dataset: SeasonsDataset, map_id: str, rec) -> dict[int, ImageRecord]:
    """Model image id -> dataset database record (matched by key, then by name). Unmatched images are dropped."""
    records = dataset.database_for_map(map_id)
    by_key = {r.key: r for r in records}
    by_name = {r.name: r for r in records}
    out = {}
    for image_id, image in rec.images.items():
        r = by_key.get(image.name) or by_name.get(image.name) or by_name.get(Path(image.name).name)
        if r is not None:
            out[image_id] = r
    if not out:
        raise DatasetError(f"{dataset.maps[map_id].model_path}: no model image matches a database image of {map_id}")
    return out


@dataclass
class MapDescriptors:
    """In-memory form of the map HDF5 file (see module docstring for the arrays)."""

    xyz: np.ndarray
    point3D_ids: np.ndarray
    descriptors: np.ndarray
    owner: np.ndarray
    d_min: np.ndarray
    d_max: np.ndarray
    view_dir: np.ndarray
    view_spread: np.ndarray

    @classmethod
    def load(cls, path: Path) -> "MapDescriptors":
        with h5py.File(path, "r") as f:
            return cls(**{k: f[k][()] for k in cls.__dataclass_fields__})


def map_filename(map_id: str, feature_file: str) -> str:
    return f"map-{map_id}-{Path(feature_file).stem.removeprefix('feats-')}.h5"


def main(conf, dataset: SeasonsDataset, map_id: str, feature_path: Path, out_path: Path, overwrite: bool = False) -> Path:
    """Compute the per-point descriptors and visibility statistics of one map.

    Args:
        conf: see :data:`default_conf`.
        dataset: the dataset whose database images (features already in ``feature_path``) observe the map.
        map_id: which map.
        feature_path: HDF5 file of database features (:mod:`reconstruction.features`).
        out_path: the map HDF5 file to write (kept when it exists, unless ``overwrite``).
    Returns:
        ``out_path``.
    Raises:
        DatasetError: the model is missing or has no point with an associated descriptor.
    """
    return main_maps(conf, dataset, feature_path, {map_id: Path(out_path)}, overwrite)[map_id]


def main_maps(conf, dataset: SeasonsDataset, feature_path: Path, out_paths: Mapping[str, Path],
              overwrite: bool = False, engine: Engine | None = None) -> dict[str, Path]:
    """:func:`main` for several maps, one task per map on ``engine`` (:class:`fgsn.utils.parallel.Engine`): the
    workers compute, this process alone writes each map's file as its task completes. Same files as :func:`main`.

    Args:
        out_paths: map id -> map HDF5 file to write; maps whose file exists are skipped unless ``overwrite``.
    Returns:
        ``out_paths`` as a dict.
    """
    todo = [m for m, p in out_paths.items() if overwrite or not Path(p).exists()]
    for map_id, arrays in (engine or Engine()).imap(_compute_batch, todo, (conf, dataset, str(feature_path)), 1):
        write_h5_atomic(out_paths[map_id], arrays)
    return dict(out_paths)


def _compute_batch(shared, map_ids: list[str]) -> list[tuple[str, dict]]:
    conf, dataset, feature_path = shared
    return [(m, _compute(conf, dataset, m, feature_path)) for m in map_ids]


def _compute(conf, dataset: SeasonsDataset, map_id: str, feature_path: Path) -> dict:
    """The arrays and attributes of one map's file (schema in the module docstring)."""
    rec = load_reconstruction(dataset, map_id)
    records = database_records_by_image(dataset, map_id, rec)
    radius = float(conf["assoc_radius_px"])
    point_ids = np.array(sorted(rec.points3D.keys()), dtype=np.int64)
    row_of = {int(p): i for i, p in enumerate(point_ids)}
    xyz = np.array([rec.points3D[int(p)].xyz for p in point_ids], dtype=np.float64).reshape(-1, 3)
    descs, owners = [], []
    n_obs = n_assoc = 0
    centers = {}
    with h5py.File(feature_path, "r") as f:
        for image_id, record in records.items():
            image = rec.images[image_id]
            centers[image_id] = camera_center(record.cam_from_world)
            obs = [(p2d.xy, row_of[int(p2d.point3D_id)]) for p2d in image.points2D if p2d.has_point3D()]
            if not obs:
                continue
            if record.key not in f:
                raise DatasetError(f"{feature_path}: no features for database image {record.key}")
            kps = f[record.key]["keypoints"][()]
            desc = f[record.key]["descriptors"][()]
            xy = from_colmap_pixels(np.array([o[0] for o in obs]))
            rows = np.array([o[1] for o in obs])
            dist, idx = cKDTree(kps).query(xy, distance_upper_bound=radius)
            ok = np.isfinite(dist)
            n_obs += len(obs)
            n_assoc += int(ok.sum())
            descs.append(desc[idx[ok]])
            owners.append(rows[ok])
    if n_assoc == 0:
        raise DatasetError(f"{dataset.maps[map_id].model_path}: no model observation matches a SIFT keypoint "
                           f"within {radius} px; are the features from the same images?")
    logger.info("Map %s: %d points, %d/%d observations associated with a descriptor (%.1f %%).",
                map_id, len(point_ids), n_assoc, n_obs, 100.0 * n_assoc / max(n_obs, 1))
    stats = _visibility_stats(rec, point_ids, xyz, centers)
    return {"xyz": xyz, "point3D_ids": point_ids, "descriptors": np.concatenate(descs),
            "owner": np.concatenate(owners).astype(np.int32), **stats,
            "attrs": {"map_id": map_id, "num_images": len(records)}}


def _visibility_stats(rec, point_ids: np.ndarray, xyz: np.ndarray, centers: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """d_min, d_max, mean viewing direction and angular spread of each point's observations (the visibility model of Toft et al., ECCV 2018, Sec. 3.2)."""
    M = len(point_ids)
    d_min = np.full(M, np.inf, np.float32)
    d_max = np.zeros(M, np.float32)
    view_dir = np.zeros((M, 3), np.float64)
    spread = np.zeros(M, np.float32)
    for i, pid in enumerate(point_ids):
        cams = np.array([centers[e.image_id] for e in rec.points3D[int(pid)].track.elements if e.image_id in centers])
        if len(cams) == 0:
            continue
        v = cams - xyz[i]
        d = np.linalg.norm(v, axis=1)
        u = v / d[:, None]
        m = u.mean(0)
        m /= max(np.linalg.norm(m), 1e-12)
        d_min[i], d_max[i] = d.min(), d.max()
        view_dir[i] = m
        spread[i] = np.arccos(np.clip(u @ m, -1, 1)).max()
    return {"d_min": d_min, "d_max": d_max, "view_dir": view_dir.astype(np.float32), "view_spread": spread}
