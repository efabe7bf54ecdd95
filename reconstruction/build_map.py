"""Triangulate an SfM model from database images with known poses: ``fgsn-loc build-map``.

For slices without a shipped model (and for the built-in demo dataset). Steps, in the spirit of hloc's
``triangulation.py`` but with the poses fixed to the ground truth:

1. SIFT for every database image (:mod:`reconstruction.features`, cached).
2. Image pairs: each image with its ``num_pair_neighbors`` nearest database images (camera centres).
3. Pair matching: mutual nearest neighbours with Lowe's ratio test, then geometric verification with the
   known relative pose (Sampson distance to the epipolar line, undistorted pixels). Steps 1 and 3 run on the
   ``engine`` (``--workers N`` / ``--scheduler ADDRESS``: batches of images / pairs on Dask workers, which read
   the feature file; the same model as a serial run, tested).
4. Tracks: connected components of the verified matches (each named by its smallest keypoint index, so the
   order of the pairs does not matter); a component holding two keypoints of one image is dropped.
5. Triangulation: linear (DLT) over all observations on the undistorted normalised plane, observations with a
   reprojection error above ``max_reproj_error_px`` removed and the point re-estimated; points kept with at
   least 2 observations, positive depth and a triangulation angle of at least ``min_tri_angle_deg``.
6. A pycolmap model (binary) whose images hold all our keypoints (COLMAP pixel convention), so observation
   ``i`` of an image is its keypoint ``i`` in the feature file.
"""
from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

import h5py
import numpy as np

from fgsn.utils.config import merge_config
from fgsn.utils.errors import OutputExistsError
from fgsn.utils.logging import progress, setup_logging
from fgsn.utils.parallel import Engine, add_engine_arguments, engine_options

from . import features as feature_step
from .camera import Camera, to_colmap_pixels
from .datasets import SeasonsDataset, load_dataset, parse_slices
from .records import ImageRecord
from .geometry import camera_center, sampson_errors, skew

logger = logging.getLogger(__name__)

default_conf = {
    "features": feature_step.default_conf,
    "num_pair_neighbors": 8,  # each database image is matched with this many nearest database images
    "ratio_threshold": 0.8,  # Lowe ratio for image-to-image matching
    "max_epipolar_error_px": 4.0,  # Sampson distance threshold of the pose-based verification, pixels
    "max_reproj_error_px": 4.0,  # observations with a larger reprojection error are dropped, pixels
    "min_tri_angle_deg": 1.5,  # smallest largest-angle between observing rays, degrees
}


def _mutual_ratio_matches(d0: np.ndarray, d1: np.ndarray, ratio: float) -> np.ndarray:
    """(K, 2) index pairs of mutual nearest neighbours passing the ratio test (faiss, exact L2)."""
    import faiss

    if len(d0) < 2 or len(d1) < 2:
        return np.zeros((0, 2), int)
    d0, d1 = d0.astype(np.float32), d1.astype(np.float32)
    i1 = faiss.IndexFlatL2(d1.shape[1])
    i1.add(d1)
    D, I = i1.search(d0, 2)
    i0 = faiss.IndexFlatL2(d0.shape[1])
    i0.add(d0)
    _, J = i0.search(d1, 1)
    idx0 = np.arange(len(d0))
    ok = (np.sqrt(D[:, 0]) < ratio * np.sqrt(D[:, 1])) & (J[I[:, 0], 0] == idx0)
    return np.stack([idx0[ok], I[ok, 0]], axis=1)


def _component_roots(n: int, edges: np.ndarray) -> np.ndarray:
    """(n,) the smallest node of each node's connected component in the graph of (E, 2) ``edges`` (scipy)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    smallest = np.full(labels.max(initial=-1) + 1, n, np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    return smallest[labels]


@functools.lru_cache(maxsize=32)
def _pair_inputs(feature_path: str, key: str, camera) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors and undistorted normalised keypoints of one image (cached per process: pairs share images)."""
    with h5py.File(feature_path, "r") as f:
        return f[key]["descriptors"][()], camera.cam_from_img(f[key]["keypoints"][()].astype(np.float64))


def _match_pairs(shared: dict, pairs: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Verified matches of image pairs (i, j): per pair the (K,) global keypoint indices of both sides (a task of
    :func:`main`; ``shared`` holds the feature file, image keys, cameras, poses, keypoint offsets, thresholds)."""
    keys, cams, poses, offsets = shared["keys"], shared["cameras"], shared["poses"], shared["offsets"]
    out = []
    for i, j in pairs:
        di, xi = _pair_inputs(shared["feature_path"], keys[i], cams[i])
        dj, xj = _pair_inputs(shared["feature_path"], keys[j], cams[j])
        m = _mutual_ratio_matches(di, dj, shared["ratio"])
        Ri, ti = poses[i][:, :3], poses[i][:, 3]
        Rj, tj = poses[j][:, :3], poses[j][:, 3]
        R = Rj @ Ri.T  # j_from_i
        t = tj - R @ ti
        E = skew(t / max(np.linalg.norm(t), 1e-12)) @ R
        focal = (cams[i].focal + cams[j].focal) / 2
        ok = np.abs(sampson_errors(E, xi[m[:, 0]], xj[m[:, 1]])) * focal < shared["max_epipolar_error_px"]
        out.append((offsets[i] + m[ok, 0].astype(np.int64), offsets[j] + m[ok, 1].astype(np.int64)))
    return out


def triangulate_dlt(poses: np.ndarray, xn: np.ndarray) -> np.ndarray:
    """Linear triangulation of points seen in L views each.

    Args:
        poses: (P, L, 3, 4) cam_from_world of the observing cameras.
        xn: (P, L, 2) undistorted normalised image coordinates.
    Returns:
        (P, 3) world points (least-squares solution of the DLT system, Hartley & Zisserman §12.2).
    """
    A = np.concatenate([xn[..., 0:1] * poses[:, :, 2] - poses[:, :, 0], xn[..., 1:2] * poses[:, :, 2] - poses[:, :, 1]], axis=1)
    _, _, vt = np.linalg.svd(A)
    X = vt[:, -1]
    return X[:, :3] / X[:, 3:4]


def main(conf, dataset: SeasonsDataset, map_id: str, out_dir: Path, cache_dir: Path, overwrite: bool = False,
         engine: Engine | None = None) -> Path:
    """Triangulate the model of ``map_id`` from its database images and write it to ``out_dir`` (COLMAP binary).

    Args:
        engine: where SIFT and the pair matching run (:class:`fgsn.utils.parallel.Engine`); None: this process.
    Raises:
        OutputExistsError: ``out_dir`` holds a model and not ``overwrite``.
        ValueError: fewer than 2 database images, or no point could be triangulated.
    """
    import pycolmap

    out_dir = Path(out_dir)
    if (out_dir / "points3D.bin").exists() and not overwrite:
        raise OutputExistsError(f"{out_dir} already holds a model; pass --overwrite to rebuild it")
    records: list[ImageRecord] = dataset.database_for_map(map_id)
    if len(records) < 2:
        raise ValueError(f"{map_id}: need at least 2 database images to triangulate, got {len(records)}")
    feature_path = Path(cache_dir) / feature_step.feature_filename(conf.features)
    engine = engine or Engine()
    feature_step.main(conf.features, [(r.key, r.path) for r in records], feature_path, engine=engine)
    with h5py.File(feature_path, "r") as f:
        kps = [f[r.key]["keypoints"][()].astype(np.float64) for r in records]
    xns = [r.camera.cam_from_img(k) for k, r in zip(kps, records)]  # undistorted normalised coordinates
    poses = np.stack([r.cam_from_world for r in records])
    centers = camera_center(poses)
    offsets = np.cumsum([0] + [len(k) for k in kps])

    # pairs by proximity
    dist = np.linalg.norm(centers[:, None] - centers[None], axis=2)
    k = min(int(conf.num_pair_neighbors), len(records) - 1)
    pairs = {tuple(sorted((i, int(j)))) for i in range(len(records)) for j in np.argsort(dist[i])[1 : k + 1]}
    shared = {"feature_path": str(feature_path), "keys": [r.key for r in records],
              "cameras": [r.camera for r in records], "poses": poses, "ratio": float(conf.ratio_threshold),
              "max_epipolar_error_px": float(conf.max_epipolar_error_px), "offsets": offsets}
    edges = []
    for a, b in progress(engine.imap(_match_pairs, sorted(pairs), shared, batch_size=32), total=len(pairs),
                         desc=f"match pairs ({map_id})", unit="pair", log=logger):
        edges.append(np.stack([a, b], 1))
    edges = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    n_verified = len(edges)
    image_of = np.repeat(np.arange(len(records)), np.diff(offsets))
    roots = _component_roots(int(offsets[-1]), edges)
    order = np.argsort(roots, kind="stable")
    splits = np.nonzero(np.diff(roots[order]))[0] + 1
    tracks = [t for t in np.split(order, splits) if len(t) >= 2 and len(np.unique(image_of[t])) == len(t)]
    logger.info("%s: %d pairs, %d verified matches, %d tracks.", map_id, len(pairs), n_verified, len(tracks))

    points, point_obs = _triangulate_tracks(tracks, image_of, offsets, xns, poses, records, conf)
    if not points:
        raise ValueError(f"{map_id}: no point could be triangulated from {len(records)} database images")
    rec = pycolmap.Reconstruction()
    cam_ids: dict[Camera, int] = {}
    for idx, r in enumerate(records):
        if r.camera not in cam_ids:
            cid = len(cam_ids) + 1
            rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=cid, model=r.camera.model, width=r.camera.width,
                                                            height=r.camera.height, params=list(r.camera.params)))
            cam_ids[r.camera] = cid
        image = pycolmap.Image(name=r.name, keypoints=to_colmap_pixels(kps[idx]), camera_id=cam_ids[r.camera], image_id=idx + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(r.cam_from_world))
    for X, obs in zip(points, point_obs):
        track = pycolmap.Track()
        for img_idx, kp_idx in obs:
            track.add_element(int(img_idx) + 1, int(kp_idx))
        rec.add_point3D(X, track)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec.write_binary(str(out_dir))
    logger.info("%s: wrote %d points (mean track length %.2f) to %s.", map_id, rec.num_points3D(),
                rec.compute_mean_track_length(), out_dir)
    return out_dir


def _triangulate_tracks(tracks, image_of, offsets, xns, poses, records, conf):
    max_err = float(conf.max_reproj_error_px)
    min_angle = np.radians(float(conf.min_tri_angle_deg))
    centers = camera_center(poses)
    points, point_obs = [], []
    for _ in range(2):  # second pass: tracks whose bad observations were removed
        by_len: dict[int, list[np.ndarray]] = {}
        for t in tracks:
            by_len.setdefault(len(t), []).append(t)
        retry = []
        for L, ts in by_len.items():
            ts = np.array(ts)
            imgs = image_of[ts]
            kp_idx = ts - offsets[imgs]
            xn = np.stack([[xns[i][k] for i, k in zip(ii, kk)] for ii, kk in zip(imgs, kp_idx)])
            P = poses[imgs]
            X = triangulate_dlt(P, xn)
            Xc = np.einsum("plij,pj->pli", P[..., :3], X) + P[..., 3]
            z = Xc[..., 2]
            focal = np.array([[records[i].camera.focal for i in row] for row in imgs])
            err = np.linalg.norm(Xc[..., :2] / np.where(z[..., None] > 0, z[..., None], np.nan) - xn, axis=-1) * focal
            good = (z > 0) & (err < max_err)
            rays = centers[imgs] - X[:, None]
            rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
            cosang = np.einsum("pli,pmi->plm", rays, rays)
            angle = np.arccos(np.clip(cosang.min(axis=(1, 2)), -1, 1))
            for p in range(len(ts)):
                if good[p].all() and angle[p] >= min_angle:
                    points.append(X[p])
                    point_obs.append(list(zip(imgs[p], kp_idx[p])))
                elif good[p].sum() >= 2 and not good[p].all():
                    retry.append(ts[p][good[p]])
        tracks = retry
        if not tracks:
            break
    return points, point_obs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=["cmu"], help="dataset layout (CMU slices)")
    parser.add_argument("--root", required=True, type=Path, help="dataset root folder")
    parser.add_argument("--slices", help="slices to build, e.g. 2,3 (default: all without a model)")
    parser.add_argument("--cache", type=Path, help="feature cache folder (default ROOT/cache)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild existing models")
    parser.add_argument("--config", type=Path, help="YAML configuration")
    add_engine_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="key=value overrides")


def run(args: argparse.Namespace) -> None:
    conf = merge_config(default_conf, yaml_path=args.config, overrides=args.overrides)
    setup_logging()
    dataset = load_dataset(args.dataset, args.root, parse_slices(args.slices))
    with Engine(**engine_options(args)) as engine:
        for map_id, src in dataset.maps.items():
            if src.exists() and not args.overwrite and not args.slices:
                logger.info("%s: model exists at %s, skipped.", map_id, src.model_path)
                continue
            main(conf, dataset, map_id, src.model_path, args.cache or Path(args.root) / "cache",
                 overwrite=args.overwrite, engine=engine)
