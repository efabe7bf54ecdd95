"""Labelled maps: every 3D point gets the majority label of the database segmentations at its observations
(``fgsn-loc label-map``; after Toft et al. ECCV 2018, Sec. 3, and Larsson et al. ICCV 2019, Sec. 5).

Each 2D observation of a point in the SfM model (a database image) votes with the label at its pixel; the point's
label is the most frequent vote (ties: the smallest label **(ours)**), its confidence the top count divided by the
number of votes. The visibility statistics GSMC and PFSL need are copied from the map descriptor file
(:mod:`reconstruction.sfm_map`), so the labelled map's rows are the map file's rows: a match's ``point_idx``
indexes both. ``cam_height`` adds the median height of the observing database cameras along the dataset's up
axis (GSMC's camera-height prior). :func:`main_maps` labels several maps on the parallel engine
(:class:`fgsn.utils.parallel.Engine`, one task per map); this process alone writes the files.

HDF5 schema of ``labelled-<map file stem>-<label source>.h5``:

    xyz           (M, 3) float64  3D points, world frame, metres (same rows as the map file)
    label         (M,)   int64    majority label; -1 for a point without a labelled observation
    confidence    (M,)   float32  top vote count / number of votes (0 without votes)
    track_length  (M,)   int32    number of votes (labelled database observations)
    d_min, d_max  (M,)   float32  smallest / largest distance to an observing database camera, metres
    view_dir      (M, 3) float32  mean unit viewing direction (point -> cameras), world frame
    view_spread   (M,)   float32  largest angle between an observing direction and ``view_dir``, radians
    cam_height    (M,)   float32  median height of the observing database camera centres along ``up``, metres
    attrs: map_id, num_classes, labels (label file path), up (3,)
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from fgsn.utils.config import between
from fgsn.utils.io import write_h5_atomic
from fgsn.utils.parallel import Engine, add_engine_arguments, engine_options

from .datasets import SeasonsDataset
from .records import DatasetError
from .camera import from_colmap_pixels
from .geometry import camera_center, horizontal_basis
from .semantics import LabelReader, labels_at
from .sfm_map import database_records_by_image, load_reconstruction

logger = logging.getLogger(__name__)

default_conf = {
    "min_votes": 1,  # a point needs at least this many labelled observations, else label -1
}
conf_checks = {"min_votes": between(1, integer=True)}  # fgsn.utils.config.check_conf


@dataclass
class LabelledMap:
    """In-memory labelled map (arrays as in the module docstring; rows aligned with the map file)."""

    xyz: np.ndarray
    label: np.ndarray
    confidence: np.ndarray
    track_length: np.ndarray
    d_min: np.ndarray
    d_max: np.ndarray
    view_dir: np.ndarray
    view_spread: np.ndarray
    cam_height: np.ndarray
    num_classes: int

    @classmethod
    def load(cls, path: str | Path) -> "LabelledMap":
        """Read a labelled map file. Raises DatasetError naming the file when it lacks an array."""
        with h5py.File(path, "r") as f:
            arrays = {}
            for fld in fields(cls):
                if fld.name == "num_classes":
                    continue
                if fld.name not in f:
                    raise DatasetError(f"{path}: labelled map has no {fld.name!r}; rebuild it with fgsn-loc label-map")
                arrays[fld.name] = f[fld.name][()]
            return cls(**arrays, num_classes=int(f.attrs["num_classes"]))


def labelled_map_filename(map_path: str | Path, labels_name: str) -> str:
    """``labelled-<map file stem>-<label source>.h5``: the name carries the map, features and label source."""
    return f"labelled-{Path(map_path).stem}-{labels_name}.h5"


def vote(point_rows: np.ndarray, labels: np.ndarray, num_points: int, num_classes: int) -> tuple[np.ndarray, ...]:
    """Majority vote of observation labels per point.

    Args:
        point_rows: (V,) point index of each vote, in [0, num_points).
        labels: (V,) label of each vote, in [0, num_classes).
        num_points: M.
        num_classes: K.
    Returns:
        label (M,) int64 (-1 without votes; ties go to the smallest label), confidence (M,) float32 (top count /
        votes), votes (M,) int32.
    """
    point_rows = np.asarray(point_rows, np.int64)
    labels = np.asarray(labels, np.int64)
    if point_rows.shape != labels.shape:
        raise ValueError(f"point_rows {point_rows.shape} and labels {labels.shape} differ")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    # counts of the (point, label) pairs that occur: memory O(votes), not O(points x K) (K up to 1000)
    pair, count = np.unique(point_rows * num_classes + labels, return_counts=True)
    pt, lab = pair // num_classes, pair % num_classes
    order = np.lexsort((lab, -count, pt))  # per point: most votes first, then the smallest label
    first = order[np.r_[True, pt[order][1:] != pt[order][:-1]]] if len(order) else order
    votes = np.bincount(point_rows, minlength=num_points)
    label = np.full(num_points, -1, np.int64)
    label[pt[first]] = lab[first]
    conf = np.zeros(num_points, np.float32)
    conf[pt[first]] = count[first] / votes[pt[first]]
    return label, conf, votes.astype(np.int32)


def group_median(groups: np.ndarray, values: np.ndarray, num_groups: int) -> np.ndarray:
    """(G,) float32 median of ``values`` (V,) per group index ``groups`` (V,) in [0, G); NaN for empty groups."""
    order = np.lexsort((values, groups))
    g, v = np.asarray(groups)[order], np.asarray(values, np.float64)[order]
    n = np.bincount(g, minlength=num_groups)
    start = np.cumsum(n) - n
    out = np.full(num_groups, np.nan, np.float32)
    has = n > 0
    lo, hi = start[has] + (n[has] - 1) // 2, start[has] + n[has] // 2
    out[has] = (v[lo] + v[hi]) / 2
    return out


def main(conf, dataset: SeasonsDataset, map_id: str, labels_path: Path, map_path: Path, out_path: Path,
         overwrite: bool = False, engine: Engine | None = None) -> Path:
    """Label every point of one map by majority vote of the database segmentations at its observations.

    Args:
        conf: see :data:`default_conf`.
        dataset: the dataset (database records with keys as in the label file; ``dataset.up``).
        map_id: which map.
        labels_path: label file holding every database image of the map (:mod:`reconstruction.semantics`).
        map_path: the map descriptor file of :mod:`reconstruction.sfm_map` (rows and visibility statistics).
        out_path: the labelled map file to write (kept when it exists with the dataset's up axis, unless
            ``overwrite``).
        engine: compute on a Dask worker (:class:`fgsn.utils.parallel.Engine`), see :func:`main_maps`; None: here.
    Returns:
        ``out_path``.
    Raises:
        DatasetError: the model is missing, or a database image has no labels (names the file and image).
    """
    return main_maps(conf, dataset, labels_path, {map_id: Path(map_path)}, {map_id: Path(out_path)}, overwrite,
                     engine)[map_id]


def main_maps(conf, dataset: SeasonsDataset, labels_path: Path, map_paths: Mapping[str, Path],
              out_paths: Mapping[str, Path], overwrite: bool = False, engine: Engine | None = None) -> dict[str, Path]:
    """:func:`main` for several maps, one task per map on ``engine`` (:class:`fgsn.utils.parallel.Engine`): the
    workers read the model, label and map files and vote, this process alone writes each labelled map's file
    (atomically) as its task completes. Same files as :func:`main` in one process.

    Args:
        map_paths: map id -> map descriptor file (:mod:`reconstruction.sfm_map`).
        out_paths: map id -> labelled map file to write; a map whose file exists with the dataset's up axis is
            skipped unless ``overwrite``.
    Returns:
        ``out_paths`` as a dict.
    """
    todo = [m for m, p in out_paths.items() if overwrite or not _is_current(Path(p), dataset.up)]
    shared = (conf, dataset, str(labels_path), {m: str(map_paths[m]) for m in todo})
    for map_id, arrays in (engine or Engine()).imap(_compute_batch, todo, shared, 1):
        label, confidence = arrays["label"], arrays["confidence"]
        ok = label >= 0
        logger.info("Labelled map %s: %d / %d points labelled, median confidence %.2f, %d labels used.", map_id,
                    int(ok.sum()), len(label), float(np.median(confidence[ok])) if ok.any() else 0.0,
                    len(np.unique(label[ok])))
        write_h5_atomic(out_paths[map_id], arrays)
    return dict(out_paths)


def _is_current(out_path: Path, up) -> bool:
    """``out_path`` exists and was made with the up axis ``up`` (else it is relabelled, with a warning)."""
    if not out_path.exists():
        return False
    with h5py.File(out_path, "r") as f:
        cached_up = f.attrs.get("up")
    if cached_up is not None and np.allclose(cached_up, up):
        return True
    logger.warning("%s was made with another up axis (%s, now %s): relabelling.", out_path, cached_up, up)
    return False


def _compute_batch(shared, map_ids: list[str]) -> list[tuple[str, dict]]:
    conf, dataset, labels_path, map_paths = shared
    return [(m, _compute(conf, dataset, m, Path(labels_path), Path(map_paths[m]))) for m in map_ids]


def _compute(conf, dataset: SeasonsDataset, map_id: str, labels_path: Path, map_path: Path) -> dict:
    """The arrays and attributes (``attrs``) of one labelled map's file (schema in the module docstring)."""
    rec = load_reconstruction(dataset, map_id)
    records = database_records_by_image(dataset, map_id, rec)
    reader = LabelReader(labels_path)
    with h5py.File(map_path, "r") as f:
        stats = {k: f[k][()] for k in ("xyz", "point3D_ids", "d_min", "d_max", "view_dir", "view_spread")}
    row_of = {int(p): i for i, p in enumerate(stats["point3D_ids"])}
    M = len(row_of)
    up = np.asarray(dataset.up, np.float64)
    rows_all, labels_all, heights_all = [], [], []
    for image_id, record in records.items():
        obs = [(p2d.xy, row_of[int(p2d.point3D_id)]) for p2d in rec.images[image_id].points2D
               if p2d.has_point3D() and int(p2d.point3D_id) in row_of]
        if not obs:
            continue
        try:
            lab_map = reader.labels(record.key)
        except KeyError as e:
            raise DatasetError(str(e)) from None
        rows = np.array([o[1] for o in obs])
        rows_all.append(rows)
        labels_all.append(labels_at(lab_map, from_colmap_pixels(np.array([o[0] for o in obs]))))
        heights_all.append(np.full(len(rows), float(camera_center(record.cam_from_world) @ up)))
    rows_all = np.concatenate(rows_all) if rows_all else np.zeros(0, np.int64)
    labels_all = np.concatenate(labels_all) if labels_all else np.zeros(0, np.int64)
    label, confidence, votes = vote(rows_all, labels_all, M, reader.num_classes)
    label[votes < int(conf["min_votes"])] = -1
    cam_height = group_median(rows_all, np.concatenate(heights_all) if heights_all else np.zeros(0), M)
    return {"xyz": stats["xyz"], "label": label, "confidence": confidence, "track_length": votes,
            **{k: stats[k] for k in ("d_min", "d_max", "view_dir", "view_spread")}, "cam_height": cam_height,
            "attrs": {"map_id": map_id, "num_classes": reader.num_classes, "labels": str(labels_path), "up": up}}


def label_colors(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(M,) labels -> (M, 3) RGB colours in [0, 1] (a fixed pseudo-random palette; -1 = grey)."""
    palette = np.random.default_rng(12345).uniform(0.1, 1.0, (max(num_classes, 1), 3))
    return np.where((labels >= 0)[:, None], palette[np.clip(labels, 0, None)], 0.5)


def export_ply(lmap: LabelledMap, path: Path) -> Path:
    """Write the labelled point cloud as a ``.ply`` coloured by label (open3d). Returns ``path``."""
    from fgsn.utils.open3d import import_open3d

    o3d = import_open3d()
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(lmap.xyz.astype(np.float64)))
    pcd.colors = o3d.utility.Vector3dVector(label_colors(lmap.label, lmap.num_classes))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.io.write_point_cloud(str(path), pcd):
        raise OSError(f"{path}: open3d could not write the point cloud")
    return path


def render_picture(lmap: LabelledMap, path: Path, up: np.ndarray = (0, 0, 1), max_points: int = 200_000) -> Path:
    """Save a PNG of the labelled point cloud: a top view (along ``up``) and a side view, coloured by label."""
    from fgsn.utils.plotting import pyplot, save_figure

    plt = pyplot()
    up, a, b = horizontal_basis(up)
    xyz = lmap.xyz
    keep = np.all(np.isfinite(xyz), 1)
    if keep.sum() > 0:  # drop the farthest 1 % of points so that a few outliers do not shrink the picture
        d = np.linalg.norm(xyz - np.median(xyz[keep], 0), axis=1)
        keep &= d <= np.quantile(d[keep], 0.99)
    idx = np.nonzero(keep)[0]
    if len(idx) > max_points:
        idx = np.random.default_rng(0).choice(idx, max_points, replace=False)
    p, c = xyz[idx], label_colors(lmap.label[idx], lmap.num_classes)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    for ax, (u, v, title) in zip(axes, [(a, b, "top view"), (a, up, "side view")]):
        ax.scatter(p @ u, p @ v, c=c, s=0.5, linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(f"{title}: {len(idx)} points, {lmap.num_classes} labels")
        ax.set_xlabel("m")
    return save_figure(fig, path)


def label_dataset(conf, dataset: SeasonsDataset, out_dir: Path, overwrite: bool = False,
                  engine: Engine | None = None) -> dict[str, Path]:
    """Features, map descriptors, database segmentation and labelled map of every map of ``dataset``, plus a
    ``.ply`` and a picture per map (what ``fgsn-loc label-map`` runs; the semantic localizers do the same in
    their ``prepare``).

    Args:
        conf: keys ``features``, ``map``, ``semantics``, ``label_map`` (see :data:`cli_conf`).
        dataset: the dataset.
        out_dir: output folder; caches go to ``out_dir/cache``.
        overwrite: recompute the labelled maps (the caches are kept).
        engine: run every step on its Dask workers (:class:`fgsn.utils.parallel.Engine`): features and labels
            per batch of images, map descriptors and labelled maps one task per map; this process writes every
            file. None: all in this process.
    Returns:
        map_id -> labelled map path.
    """
    from . import features as feature_step
    from . import semantics, sfm_map

    out_dir = Path(out_dir)
    cache = out_dir / "cache"
    feature_path = cache / feature_step.feature_filename(conf.features)
    feature_step.main(conf.features, [(r.key, r.path) for r in dataset.database], feature_path, engine=engine)
    labels_path = semantics.main(conf.semantics, [(r.key, r.path) for r in dataset.database],
                                 semantics.labels_path(conf.semantics, cache), engine=engine)
    map_paths = {m: cache / sfm_map.map_filename(m, feature_path.name) for m in dataset.maps}
    sfm_map.main_maps(conf.map, dataset, feature_path, map_paths, engine=engine)
    name = semantics.source_name(conf.semantics)
    out = main_maps(conf.label_map, dataset, labels_path, map_paths,
                    {m: out_dir / labelled_map_filename(p, name) for m, p in map_paths.items()}, overwrite, engine)
    for map_id, path in out.items():
        lmap = LabelledMap.load(path)
        export_ply(lmap, path.with_suffix(".ply"))
        render_picture(lmap, path.with_suffix(".png"), dataset.up)
    return out


def cli_conf() -> dict:
    """Default configuration of ``fgsn-loc label-map`` (the same keys as the semantic localizers' sections)."""
    from . import features as feature_step
    from . import semantics, sfm_map

    return {"features": feature_step.default_conf, "map": sfm_map.default_conf, "semantics": semantics.default_conf,
            "label_map": default_conf}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=["cmu", "robotcar"])
    parser.add_argument("--root", required=True, type=Path, help="dataset root folder")
    parser.add_argument("--slices", help="CMU slices, e.g. 2,3 (default: all present)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (cache, labelled maps, .ply, .png)")
    parser.add_argument("--config", type=Path, help="YAML configuration (features, map, semantics, label_map)")
    parser.add_argument("--overwrite", action="store_true", help="recompute the labelled maps")
    add_engine_arguments(parser)
    parser.add_argument("overrides", nargs="*",
                        help="key=value overrides, e.g. semantics.checkpoint=CKPT semantics.segment.resize_short=160")


def run(args: argparse.Namespace) -> None:
    from fgsn.utils.config import merge_config, save_config
    from fgsn.utils.logging import setup_logging

    from .datasets import load_dataset, parse_slices

    conf = merge_config(cli_conf(), yaml_path=args.config, overrides=args.overrides)
    save_config(conf, args.out / "config.yaml")
    setup_logging(args.out / "log.txt")
    dataset = load_dataset(args.dataset, args.root, parse_slices(args.slices))
    with Engine(**engine_options(args)) as engine:
        out = label_dataset(conf, dataset, args.out, overwrite=args.overwrite, engine=engine)
    for map_id, path in out.items():
        print(f"{map_id}: {path} (+ .ply, .png)")
