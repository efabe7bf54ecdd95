"""Procedural demo dataset: a textured street rendered in NumPy, in the Extended CMU Seasons layout.

Nothing is read from disk: the scene, its textures, the trajectories and the appearance conditions are all
generated from ``conf.seed``, so the same configuration always gives the same files.

Package layout (imports flow downwards only): ``camera`` (:class:`SynthCamera`), ``textures`` (procedural
textures), ``scene`` (faces, :func:`build_scene`, ``CLASSES``), ``render`` (ray casting,
:func:`render_geometry`), ``conditions`` (``CONDITIONS``, season/weather/night appearance, :func:`render_view`),
``trajectory`` (:func:`make_trajectory`), ``writers`` (text, image and correspondence files); this module holds
``default_conf``, the pipeline step :func:`main` and the CLI (:func:`add_arguments`, :func:`run`).

Scene (world units metres, world up = +z, the street runs along +x)::

    ground z = 0: road |y| < road_width_m / 2, sidewalks up to the building fronts (curb, slabs, markings)
    buildings: axis-aligned boxes on both sides, fronts at |y| = road/2 + sidewalk + setback (varying),
               heights 6-22 m; facades with bricks/plaster/stone, windows with frames, doors, shop signs
               with random text, posters, graffiti; closing buildings across both ends of the street
    trees (trunk + canopy boxes) and lamp posts on the sidewalks; a sky panorama above

Semantic class ids (``CLASSES``): 0 sky, 1 road, 2 sidewalk (incl. curb), 3 building wall, 4 window (glass and
frame), 5 door, 6 vegetation, 7 sign/poster, 8 road marking, 9 pole/trunk.

Cameras: OPENCV model (fx, fy, cx, cy, k1, k2, p1, p2) with a small radial distortion; the images are rendered
WITH the distortion. ``intrinsics.txt`` holds COLMAP's parameters: pixel centres at +0.5, so a camera-frame
point projects to the project's pixel (integer = pixel centre) ``u = fx * x_d + cx - 0.5``.

Output layout under ``out_dir`` (``N`` = slice id, ``<cond>`` in ``conf.conditions``)::

    config.yaml                                   merged configuration
    intrinsics.txt                                "c0 OPENCV w h fx fy cx cy k1 k2 p1 p2" ('#' header lines)
    sliceN/database/img_XXXXX_c0_<us>us.jpg       reference ("database") traversal, condition "reference"
    sliceN/query/img_XXXXX_c0_<us>us.jpg          query traversals, one per condition
    sliceN/ground-truth-database-images-sliceN.txt        "name qw qx qy qz cx cy cz"
    sliceN/camera-poses/slice-N-gt-query-images-<cond>.txt  same format
    sliceN/test-images-sliceN.txt                 query basenames (all conditions)
    sliceN/semantics/{database,query}/img_XXXXX_c0_<us>us.png   uint8 class map (ids above), same size
    sliceN/odometry/{database,<cond>}.txt         "name_prev name_cur qw qx qy qz tx ty tz" per line:
                                                  cur_from_prev, the exact rigid transform from the previous
                                                  frame's camera to the current one (X_cur = R X_prev + t,
                                                  quaternion (w, x, y, z)); consumers add their own noise
    correspondence/sliceN/correspondence_data/correspondence_sliceN_runref_run<cond>_c<i>_c<j>.mat
    correspondence/sliceN/images/sliceN/reference/<name>.jpg   database image i (reference condition)
    correspondence/sliceN/images/sliceN/<cond>/<name>.jpg      database view j rendered under <cond>

Quaternions are world-to-camera (w, x, y, z); the three numbers after them are the camera centre C. Image
numbers ``XXXXX`` run over the database then the query traversals of a slice (``1`` upwards); timestamps are
microseconds since the epoch, one date per traversal. ``sparse/`` is not written: ``fgsn-loc build-map``
triangulates it from the database images and their ground-truth poses.

Correspondence files (HDF5, MATLAB v7.3 style): ``im_i_path``/``im_j_path`` (L, 1) uint16 character codes of
the image path relative to ``images/``; ``pt_i``/``pt_j`` (N, 2) float64 pixels (x, y), 0-based, integer =
pixel centre; ``dist_from_center`` (N, 1) float64, the distance of ``pt_i`` from the image centre divided by
half the image diagonal. ``c<i>``/``c<j>`` are 0-based indices into the database traversal. ``pt_i`` are pixel
centres of image i; ``pt_j`` the exact projections of the same 3D surface points (depth-buffer occlusion
test) into view j.

Conditions (``CONDITIONS``): ``reference`` (overcast day, the database), ``dusk`` (dark, warm, lamps on),
``autumn`` (low sun, orange foliage, leaves on the ground), ``sun`` (hard sunlight, saturated), ``snow``
(snow-covered ground and foliage, haze, falling flakes, blur), ``night`` (dark, street lamps, headlights,
lit windows, lamp glows, sensor noise).
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fgsn.utils.parallel import Engine, add_engine_arguments, engine_options

from .camera import SynthCamera
from .conditions import CONDITIONS, _frame_rng, render_view
from .render import render_geometry
from .scene import CLASSES, Face, Scene, build_scene
from .trajectory import make_trajectory
from .writers import (_odometry_lines, _pose_line, _write_image, _write_lines, _write_slice_correspondences,
                      correspondences)

__all__ = ["CLASSES", "CONDITIONS", "Face", "Scene", "SynthCamera", "add_arguments", "build_scene", "correspondences",
           "default_conf", "main", "make_trajectory", "plan_slice", "render_geometry",
           "render_view", "run", "slice_scene"]

logger = logging.getLogger(__name__)

default_conf = {
    "seed": 0,  # master seed of scene, trajectories and condition effects (integer)
    "slices": [2],  # slice ids to generate (Extended CMU numbering; 2-8 are "urban"), one street per slice
    "conditions": ["dusk", "autumn", "snow", "night"],  # query conditions, subset of CONDITIONS minus reference
    "jpeg_quality": 92,  # JPEG quality of all images, 0-100
    "write_semantics": True,  # write the per-pixel class maps (uint8 PNG) of database and query images
    "write_correspondences": True,  # write the cross-season correspondence dataset
    "camera": {
        "width": 640,  # image width, pixels
        "height": 480,  # image height, pixels
        "fx": 500.0,  # focal length x, pixels
        "fy": 500.0,  # focal length y, pixels
        "cx": None,  # principal point x in COLMAP convention (pixel centre +0.5), pixels; null = width / 2
        "cy": None,  # principal point y in COLMAP convention, pixels; null = height / 2
        "k1": -0.05,  # OPENCV radial distortion k1 (unitless, normalised coordinates)
        "k2": 0.0,  # OPENCV radial distortion k2
        "p1": 0.0,  # OPENCV tangential distortion p1
        "p2": 0.0,  # OPENCV tangential distortion p2
    },
    "trajectory": {
        "n_database": 30,  # frames of the reference traversal
        "database_spacing_m": 2.0,  # distance between consecutive database frames, metres
        "n_queries": 8,  # frames of each query traversal (one traversal per condition)
        "query_spacing_m": 3.0,  # distance between consecutive query frames, metres
        "speed_mps": 6.0,  # vehicle speed (sets the timestamps), metres per second
        "camera_height_m": 1.8,  # camera height above the ground, metres
        "lane_offset_m": -2.0,  # lateral position of the reference traversal (y), metres (right lane = -y)
        "query_lateral_offset_m": 0.6,  # max |lateral offset| of a query traversal from the reference, metres
        "yaw_offset_deg": -15.0,  # camera yaw relative to the driving direction (negative = to the right), deg
        "query_yaw_jitter_deg": 5.0,  # max |extra yaw| of a query traversal's camera, degrees
        "pitch_deg": -2.0,  # camera pitch (negative = looking down), degrees
        "wander_m": 0.25,  # amplitude of the slow lateral wander along a traversal, metres
        "pose_noise_deg": 0.4,  # per-frame random rotation jitter (std), degrees
    },
    "scene": {
        "road_width_m": 8.0,  # road width (both lanes), metres
        "sidewalk_width_m": 3.0,  # sidewalk width in front of the nearest building front, metres
        "max_setback_m": 2.5,  # building fronts are set back by 0..max_setback_m behind the sidewalk, metres
        "building_width_m": [7.0, 16.0],  # range of building widths along the street, metres
        "building_height_m": [7.0, 22.0],  # range of building heights, metres
        "facade_texels_per_m": 64.0,  # facade texture resolution, texels per metre
        "ground_texels_per_m": 48.0,  # ground texture resolution, texels per metre
        "tree_spacing_m": 14.0,  # mean distance between trees on each sidewalk, metres
        "lamp_spacing_m": 22.0,  # distance between street lamps on each side, metres
    },
    "correspondence": {
        "n_pairs": 2,  # image pairs per condition
        "max_index_offset": 2,  # view j = database index i + offset, |offset| <= this
        "n_points": 1500,  # pixels sampled in image i per pair (those visible in j are kept)
        "depth_tolerance": 0.01,  # occlusion test: relative depth difference allowed in view j
    },
}

_REF_DATE = datetime(2010, 9, 1, 10, 0, tzinfo=timezone.utc)
_COND_DATES = {
    "reference": _REF_DATE,
    "dusk": datetime(2010, 10, 21, 17, 45, tzinfo=timezone.utc),
    "autumn": datetime(2010, 11, 3, 12, 10, tzinfo=timezone.utc),
    "sun": datetime(2011, 4, 10, 14, 0, tzinfo=timezone.utc),
    "snow": datetime(2011, 1, 25, 11, 30, tzinfo=timezone.utc),
    "night": datetime(2010, 12, 20, 20, 15, tzinfo=timezone.utc),
}


# ----------------------------------------------------------------------------------------------------------
# Pipeline step
# ----------------------------------------------------------------------------------------------------------
def _name(index: int, t_us: int) -> str:
    return f"img_{index:05d}_c0_{t_us}us.jpg"


def plan_slice(conf: DictConfig, slice_id: int) -> dict:
    """Trajectories, names and timestamps of one slice (no rendering).

    Returns:
        dict with ``x_range`` (street extent, metres), ``database`` (list of (name, (3, 4) cam_from_world)) and
        ``queries`` {cond: list of (name, cam_from_world)}.
    """
    tr = conf.trajectory
    rng = np.random.default_rng([conf.seed, slice_id, 1])
    db_len = (tr.n_database - 1) * tr.database_spacing_m
    q_len = (tr.n_queries - 1) * tr.query_spacing_m
    length = max(db_len, q_len)
    x_range = (-25.0, length + 70.0)
    db = make_trajectory(tr.n_database, tr.database_spacing_m, 0.0, tr.lane_offset_m, tr.camera_height_m,
                         math.radians(tr.yaw_offset_deg), math.radians(tr.pitch_deg), tr.wander_m,
                         math.radians(tr.pose_noise_deg), rng)
    dt_db = tr.database_spacing_m / tr.speed_mps
    t0 = int(_REF_DATE.timestamp() * 1e6) + slice_id * 3_600_000_000
    index = 1
    database = []
    for k, T in enumerate(db):
        database.append((_name(index, t0 + int(round(k * dt_db * 1e6)) + int(rng.integers(0, 1000))), T))
        index += 1
    queries = {}
    for cond in conf.conditions:
        if cond not in CONDITIONS or cond == "reference":
            raise ValueError(f"Unknown query condition {cond!r}; choose from {CONDITIONS[1:]}")
        x_start = float(rng.uniform(0, max(db_len - q_len, 0.0)))
        lat = tr.lane_offset_m + float(rng.uniform(-tr.query_lateral_offset_m, tr.query_lateral_offset_m))
        yaw = tr.yaw_offset_deg + float(rng.uniform(-tr.query_yaw_jitter_deg, tr.query_yaw_jitter_deg))
        Ts = make_trajectory(tr.n_queries, tr.query_spacing_m, x_start, lat, tr.camera_height_m + rng.uniform(-0.1, 0.1),
                             math.radians(yaw), math.radians(tr.pitch_deg), tr.wander_m,
                             math.radians(tr.pose_noise_deg), rng)
        tq0 = int(_COND_DATES[cond].timestamp() * 1e6) + slice_id * 3_600_000_000
        dt = tr.query_spacing_m / tr.speed_mps
        queries[cond] = []
        for k, T in enumerate(Ts):
            queries[cond].append((_name(index, tq0 + int(round(k * dt * 1e6)) + int(rng.integers(0, 1000))), T))
            index += 1
    return dict(x_range=x_range, database=database, queries=queries)


def slice_scene(conf: DictConfig, slice_id: int) -> tuple[dict, Scene]:
    """The plan (:func:`plan_slice`) and the scene of one slice, exactly as :func:`main` generates them.

    Args:
        conf: a configuration merged with ``default_conf``.
        slice_id: the slice number.
    """
    plan = plan_slice(conf, slice_id)
    seed = int(np.random.default_rng([conf.seed, slice_id]).integers(1 << 31))
    return plan, build_scene(conf.scene, plan["x_range"], seed=seed)


@functools.lru_cache(maxsize=1)
def _worker_scene(conf_json: str, slice_id: int) -> tuple[SynthCamera, Scene, int]:
    """The camera, scene and seed of one slice, built once per process (deterministic from the seed)."""
    conf = OmegaConf.create(json.loads(conf_json))
    return SynthCamera.from_conf(conf.camera), slice_scene(conf, slice_id)[1], int(conf.seed)


def _render_batch(shared: tuple[str, int], batch: list) -> list[tuple[str, str, np.ndarray, np.ndarray | None]]:
    """(split, image name, BGR image, class map or None) of each (split, condition, frame index, name,
    cam_from_world) job of ``batch`` (worker side of :func:`main`)."""
    conf_json, slice_id = shared
    cam, scene, seed = _worker_scene(conf_json, slice_id)
    semantics = json.loads(conf_json)["write_semantics"]
    out = []
    for split, cond, k, name, T in batch:
        r = render_view(scene, cam, T, cond, _frame_rng(seed, slice_id, cond, k))
        out.append((split, name, r["image"], r["labels"] if semantics else None))
    return out


def main(conf: DictConfig | dict, out_dir: Path, overwrite: bool = False, engine: Engine | None = None) -> Path:
    """Generate the synthetic dataset into ``out_dir`` (layout in the module docstring).

    Args:
        conf: configuration (merged with ``default_conf``; unknown keys raise ``ValueError``).
        out_dir: dataset root (gets ``intrinsics.txt``, ``sliceN/``, ``correspondence/``, ``config.yaml``).
        overwrite: re-render images that already exist (otherwise they are kept; text files are rewritten).
        engine: render the images on its Dask workers (:class:`fgsn.utils.parallel.Engine`; each worker builds
            the slice's scene from the seed, this process writes every file); the same files as serially. None:
            here.
    Returns:
        ``out_dir``.
    """
    from fgsn.utils.config import merge_config, save_config
    from tqdm import tqdm

    conf = merge_config(default_conf, extra=OmegaConf.to_container(conf) if isinstance(conf, DictConfig) else conf)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(conf, out_dir / "config.yaml")
    cam = SynthCamera.from_conf(conf.camera)
    _write_lines(out_dir / "intrinsics.txt",
                 ["c0 OPENCV %d %d " % (cam.width, cam.height) + " ".join(f"{v:.6f}" for v in cam.colmap_params())],
                 ["Synthetic demo dataset (reconstruction.synthetic): camera list with one line of data per camera:",
                  "  [Camera ID] [Distortion model] [w] [h] [fx] [fy] [cx] [cy] [k1] [k2] [p1] [p2]",
                  "COLMAP convention (pixel centre at +0.5); images are distorted with these parameters."])
    q = conf.jpeg_quality
    for slice_id in conf.slices:
        slice_id = int(slice_id)
        sdir = out_dir / f"slice{slice_id}"
        plan, scene = slice_scene(conf, slice_id)
        logger.info("slice%d: %d faces, street x in [%.0f, %.0f] m", slice_id, len(scene.faces), *plan["x_range"])
        _write_lines(sdir / f"ground-truth-database-images-slice{slice_id}.txt",
                     [_pose_line(n, T) for n, T in plan["database"]])
        all_q = []
        for cond, frames in plan["queries"].items():
            _write_lines(sdir / "camera-poses" / f"slice-{slice_id}-gt-query-images-{cond}.txt",
                         [_pose_line(n, T) for n, T in frames])
            all_q += [n for n, _ in frames]
        _write_lines(sdir / f"test-images-slice{slice_id}.txt", all_q)
        odo_header = ["name_prev name_cur qw qx qy qz tx ty tz: cur_from_prev (X_cur = R X_prev + t), exact,",
                      "world-to-camera convention, quaternion (w, x, y, z), metres"]
        _write_lines(sdir / "odometry" / "database.txt", _odometry_lines(plan["database"]), odo_header)
        for cond, frames in plan["queries"].items():
            _write_lines(sdir / "odometry" / f"{cond}.txt", _odometry_lines(frames), odo_header)

        jobs = [("database", "reference", k, n, T) for k, (n, T) in enumerate(plan["database"])]
        jobs += [("query", c, k, n, T) for c, fr in plan["queries"].items() for k, (n, T) in enumerate(fr)]
        sem = {n: sdir / "semantics" / split / (Path(n).stem + ".png") for split, _, _, n, _ in jobs}
        todo = [j for j in jobs if overwrite or not (sdir / j[0] / j[3]).exists()
                or (conf.write_semantics and not sem[j[3]].exists())]
        shared = (json.dumps(OmegaConf.to_container(conf), sort_keys=True), slice_id)
        rendered = (engine or Engine()).imap(_render_batch, todo, shared, batch_size=4)
        for split, name, image, labels in tqdm(rendered, total=len(todo), desc=f"slice{slice_id} images"):
            _write_image(sdir / split / name, image, q)  # atomic: a killed run leaves whole images only
            if labels is not None:
                _write_image(sem[name], labels, q)

        if conf.write_correspondences:
            _write_slice_correspondences(conf, out_dir, slice_id, scene, cam, plan, sdir, overwrite)
    return out_dir


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------
def ground_truth_label_items(dataset) -> list:
    """(image key, ground-truth class PNG) of every database and query image of a generated dataset, for
    :func:`reconstruction.semantics.labels_from_pngs` (a perfect "precomputed" label source, ``len(CLASSES)``
    labels).

    Raises:
        FileNotFoundError: a PNG is missing (the dataset was generated with ``write_semantics=false``).
    """
    items = []
    for r in dataset.database + dataset.queries:
        slice_dir, split, fname = Path(r.key).parts[-3:]
        png = Path(dataset.root) / slice_dir / "semantics" / split / (Path(fname).stem + ".png")
        if not png.is_file():
            raise FileNotFoundError(f"{png}: ground-truth semantics missing (generate with write_semantics=true)")
        items.append((r.key, png))
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write")
    parser.add_argument("--config", type=Path, default=None, help="YAML file with keys of default_conf")
    parser.add_argument("--overwrite", action="store_true", help="re-render images that already exist")
    parser.add_argument("dotlist", nargs="*", help="overrides key=value, e.g. trajectory.n_database=100")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from fgsn.utils.config import merge_config
    from fgsn.utils.logging import setup_logging

    conf = merge_config(default_conf, yaml_path=args.config, overrides=args.dotlist)
    setup_logging(Path(args.out) / "log.txt")
    with Engine(**engine_options(args)) as engine:
        main(conf, args.out, overwrite=args.overwrite, engine=engine)
    return 0
