"""Per-query figures of a semantic localization run (``fgsn-loc figures``): the query's segmentation, the
labelled map projected with the estimated pose, and the 2D-3D matches given to RANSAC (inliers of the estimated
pose in green, outliers in red; matches the semantic filter dropped in grey).

Everything drawn is read from the step outputs of the run (nothing is recomputed): the poses from
``results.jsonl``, the matches and their keypoints (the matches and feature files, read once per query by the
method's ``load_matches``), the labelled map with :meth:`LabelledMap.load` (its rows are the map file's, so it gives the matched 3D points
too) and the query segmentation with :class:`LabelReader`. The run's saved ``config.yaml`` gives the paths of those
files (the localizer's ``feature_path``, ``match_path``, ``labels_path``, ``labelled_map_paths``, built from the
configuration alone). Only the mask of the matches the semantic filter kept is the method's own
``select_matches`` (on those matches, bearings included): it depends on the method's settings and state (SSMC's label test, GSMC's scores with the
gravity and camera-height priors, PFSL's initialisation filter), which no step writes to disk. Figures go to
``RUN/figures/<condition>/<query>.png``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from fgsn.utils.io import read_image
from fgsn.utils.plotting import pyplot, save_figure
from localization.localize import get_localizer_class
from localization.semantic import SemanticLocalizer
from localization.submission import pose_from_record, read_results
from reconstruction.camera import Camera, project_world
from reconstruction.datasets import load_dataset, parse_slices
from reconstruction.label_map import LabelledMap, label_colors
from reconstruction.semantics import LabelReader

logger = logging.getLogger(__name__)


def query_figure(image: np.ndarray, query_labels: np.ndarray, num_classes: int, keypoints: np.ndarray,
                 points3D: np.ndarray, kept: np.ndarray, cam_from_world: np.ndarray | None, camera: Camera,
                 map_xyz: np.ndarray, map_labels: np.ndarray, path: Path, threshold_px: float = 8.0,
                 title: str = "") -> Path:
    """Draw the three panels of one query and save them as a PNG.

    Args:
        image: (H, W, 3) RGB uint8 query image.
        query_labels: (H, W) label map of the query.
        num_classes: K (for the colours).
        keypoints: (K, 2) matched query keypoints, pixels; points3D: (K, 3) their matched world points.
        kept: (K,) bool, matches the method gave to RANSAC.
        cam_from_world: (3, 4) estimated pose, or None for a failed query (no projection, no inliers).
        camera: the query camera.
        map_xyz: (M, 3) labelled map points; map_labels: (M,) their labels (-1 = none).
        path: output PNG.
        threshold_px: reprojection error below which a kept match counts as an inlier, pixels.
    """
    plt = pyplot()
    H, W = query_labels.shape
    fig, axes = plt.subplots(1, 3, figsize=(18, 18 * H / W / 3 + 0.8))
    seg = label_colors(query_labels.reshape(-1), num_classes).reshape(H, W, 3)
    axes[0].imshow((0.45 * image / 255.0 + 0.55 * seg).clip(0, 1))
    axes[0].set_title("query segmentation")
    axes[1].imshow(image, alpha=0.5)
    axes[2].imshow(image)
    inl = np.zeros(len(keypoints), bool)
    if cam_from_world is not None:
        xy, ok = project_world(map_xyz, cam_from_world, camera, min_depth=1e-3)
        ok &= map_labels >= 0
        axes[1].scatter(xy[ok, 0], xy[ok, 1], c=label_colors(map_labels[ok], num_classes), s=3, linewidths=0)
        pxy, pok = project_world(points3D, cam_from_world, camera, min_depth=1e-3)
        inl = kept & pok & (np.linalg.norm(pxy - keypoints, axis=1) < threshold_px)
    axes[1].set_title("labelled map projected with the estimated pose" if cam_from_world is not None
                      else "not localized: no projection")
    for mask, color, label in ((~kept, "0.6", "dropped"), (kept & ~inl, "red", "outlier"), (inl, "lime", "inlier")):
        axes[2].scatter(keypoints[mask, 0], keypoints[mask, 1], s=6, c=color, linewidths=0,
                        label=f"{label} ({int(mask.sum())})")
    axes[2].legend(loc="lower right", fontsize=8, markerscale=3)
    axes[2].set_title("2D-3D matches")
    for ax in axes:
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=80)


def main(dataset, run_dir: Path, per_condition: int = 2, names: list[str] | None = None) -> list[Path]:
    """Figures for the first ``per_condition`` queries of each condition (or the given ``names``) of a run.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.yaml`` / ``results.jsonl``.
        ValueError: the run's method has no labels (figures need a semantic method: ssmc, gsmc, pfsl).
    """
    run_dir = Path(run_dir)
    for f in ("config.yaml", "results.jsonl"):
        if not (run_dir / f).is_file():
            raise FileNotFoundError(f"{run_dir / f}: not found; is {run_dir} a localize output folder?")
    conf = OmegaConf.load(run_dir / "config.yaml")
    cls = get_localizer_class(conf.method)
    if not issubclass(cls, SemanticLocalizer):
        raise ValueError(f"{run_dir}: method {conf.method!r} has no labels; figures need ssmc, gsmc or pfsl")
    # built from the configuration only (no work): the step outputs' paths and the method's select_matches
    loc = cls(cls.merged_conf(conf.localizer), dataset, Path(conf.cache_dir) if conf.cache_dir else run_dir / "cache")
    results = read_results(run_dir / "results.jsonl")
    if names is None:
        chosen: dict[str, list] = {}
        for q in dataset.queries:
            if q.name in results and len(chosen.setdefault(q.condition, [])) < per_condition:
                chosen[q.condition].append(q)
        queries = [q for qs in chosen.values() for q in qs]
    else:
        by_name = dataset.query_by_name()
        queries = [by_name[n] for n in names]
    reader = LabelReader(loc.labels_path)
    lmaps: dict[str, LabelledMap] = {}
    out = []
    for q in queries:
        rec = results.get(q.name)
        matches = loc.load_matches(q)  # the matches file and the feature file's keypoints
        if q.map_id not in lmaps:
            lmaps[q.map_id] = LabelledMap.load(loc.labelled_map_paths[q.map_id])
        lmap = lmaps[q.map_id]
        kept, _, _ = loc.select_matches(q, matches)  # the method's filter (module docstring)
        pose = pose_from_record(rec) if rec else None
        title = (f"{conf.method}: {q.name} ({q.condition}) - " + ("localized" if pose is not None else "failed")
                 + f", {int(kept.sum())} / {len(kept)} matches kept, {rec['num_inliers'] if rec else 0} inliers")
        out.append(query_figure(read_image(q.path), reader.labels(q.key), reader.num_classes,
                                matches["keypoints"], lmap.xyz[matches["point_idx"]], kept, pose, q.camera,
                                lmap.xyz, lmap.label, run_dir / "figures" / q.condition / (Path(q.name).stem + ".png"),
                                float(loc.conf.ransac.inlier_threshold_px), title))
    logger.info("Wrote %d query figures under %s", len(out), run_dir / "figures")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=["cmu", "robotcar"])
    parser.add_argument("--root", required=True, type=Path, help="dataset root folder")
    parser.add_argument("--slices", help="CMU slices, e.g. 2,3 (default: all present)")
    parser.add_argument("--run", required=True, type=Path, help="output folder of a semantic localize run")
    parser.add_argument("--per-condition", type=int, default=2, help="queries per condition (default 2)")
    parser.add_argument("--names", nargs="*", help="query names instead of the first ones per condition")


def run(args: argparse.Namespace) -> None:
    from fgsn.utils.logging import setup_logging

    setup_logging()
    dataset = load_dataset(args.dataset, args.root, parse_slices(args.slices))
    for p in main(dataset, args.run, args.per_condition, args.names):
        print(p)
