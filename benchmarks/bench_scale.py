"""Per-stage cost of a whole benchmark, measured on seasons-mini grown to benchmark map sizes, and projected.

    python benchmarks/bench_scale.py [--root ../shared/data/seasons-mini/cmu] [--slices 1,2] [--cache DIR]
        [--sizes 10000,100000,1000000,5000000] [--queries 6] [--gsmc-full-queries 2] [--approx index=ivf ...]
        [key=value ...]

Stages, each on one core (one thread) of this machine:

- **SIFT** (pycolmap, 8,192 features): seconds per image on ``--sift-images`` real seasons-mini images at their
  size and resized to the benchmarks' 1024 x 768 (Extended CMU) and 1024 x 1024 (RobotCar).
- **Map descriptors** (:func:`reconstruction.sfm_map.main`): seconds per 3D point on the first slice's real map.
- Per map size, in a fresh process (its peak resident memory is reported): the first slice's real map (mean point
  descriptors) grown to the size with distractors (:func:`bench_matching.grow`: noisy copies of real descriptors,
  as close to their source as real neighbours are, so they compete in the ratio test; their 3D points are copies
  moved 10 km away, with the source's labels and visibility, so that no query sees them).
  **Matching**: the exact index (``flat``) and the approximate one (``--approx``, default the matching defaults
  with ``index=ivf``): build time (all threads), seconds per 8,192 query features, and retention, the fraction of
  the exact matcher's ground-truth inliers (within 8 px of the true pose) the approximate one also returns. Above
  10^5 points the exact search runs on the first ``8192 * 10^5 / size`` features of each query only (its cost is
  linear in the features), and retention is over those. **P3P-RANSAC** (fixed iterations, and adaptive),
  **SSMC**, **GSMC** in its reduced approximation (``gsmc-reduced``) and at full fidelity (``gsmc``, the default:
  on the first ``--gsmc-full-queries`` queries only) localize the queries from the matches of the index used at
  that size (``flat`` at 10^4, the approximate one above), with the grown labelled map: seconds per query
  (filter + RANSAC) and recall (not for SSMC / GSMC with the stand-in labels). The distractor points are 10 km
  away, so GSMC's candidates (points within reach of a match) are the real map's at every size: its time per
  query is that of the seasons-mini map's density, not of a denser benchmark map.
- **Two workers**: matching (approximate, at 10^5) + P3P-RANSAC of the queries in two processes at once against
  one process alone: the speed-up of a second worker on this machine (ideal: 2).

Labels for SSMC / GSMC: ``key=value`` overrides naming a label source (as in ``bench_gsmc.py``), or by default a
stand-in written by this benchmark (grey level in 8 bins after a blur): it costs what real labels cost, but its
recall says nothing about the methods.

The projection multiplies the per-item costs by the benchmark's counts: Extended CMU Seasons (10,338 database and
56,613 query images, 24 maps of about 10^5 points) and RobotCar Seasons' rear camera (20,862 reference images,
3,978 rear queries, one map of about 5 x 10^6 points), for 1 worker and for 2 (divided by the measured speed-up),
with every query at 8,192 features (the benchmarks' images give the cap). It omits image reading, triangulation
and label computation (segmentation: ``bench_fgsn_sliding.py``).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

from _common import seasons_parser  # noqa: E402
from bench_matching import INLIER_PX, grow  # noqa: E402
from evaluation.evaluate import recall  # noqa: E402
from fgsn.utils.seeding import keyed_rng  # noqa: E402
from localization import matching  # noqa: E402
from localization.localize import build_conf, get_localizer_class  # noqa: E402
from reconstruction import features as feature_step  # noqa: E402
from reconstruction import sfm_map  # noqa: E402
from reconstruction.camera import project_world  # noqa: E402
from reconstruction.datasets import load_dataset, parse_slices  # noqa: E402
from reconstruction.geometry import pose_errors  # noqa: E402
from reconstruction.label_map import LabelledMap  # noqa: E402
from reconstruction.sfm_map import MapDescriptors  # noqa: E402

FEATURES = 8192  # features per benchmark query (the cap: 1024 x 768 images give it)
FAR_M = 10_000.0  # distractor points are moved this far (metres) along the map's first axis
BENCHMARKS = {  # name: (database images, query images, maps, points per map, image size (w, h))
    "Extended CMU Seasons": (10_338, 56_613, 24, 100_000, (1024, 768)),
    "RobotCar Seasons (rear)": (20_862, 3_978, 1, 5_000_000, (1024, 1024)),
}
METHODS = ("p3p", "p3p-adaptive", "ssmc", "gsmc-reduced", "gsmc")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: kilobytes


def _write_standin_labels(ds, path: Path) -> None:
    """Grey level in 8 bins after a 9 x 9 blur for every image (the label file schema of fgsn.segment)."""
    import cv2
    import h5py

    from fgsn.utils.io import read_image

    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["num_classes"] = 8
        for r in [*ds.database, *ds.queries]:
            lab = (cv2.blur(read_image(r.path, grayscale=True), (9, 9)) // 32).astype(np.uint8)
            g = f.create_group(r.key)
            g.create_dataset("labels", data=lab)
            g.attrs["num_classes"] = 8
            g.attrs["image_size"] = (lab.shape[1], lab.shape[0])
    tmp.rename(path)


def _localizers(args, ds) -> dict:
    """Method name -> localizer (sharing one cache), with the label overrides for the semantic ones."""
    labels = ["localizer.semantics.source=labels", f"localizer.semantics.labels={args.cache / 'standin-labels.h5'}",
              "localizer.semantics.name=standin"] if not args.overrides else list(args.overrides)
    out = {}
    for name in METHODS:
        method = name.split("-")[0]
        over = labels if method in ("ssmc", "gsmc") else []
        if name == "p3p-adaptive":
            over = ["localizer.ransac.adaptive=true"]
        if name == "gsmc-reduced":  # the approximation, chosen explicitly
            over = [*over, "localizer.gsmc.mode=reduced"]
        conf = build_conf(method, overrides=over).localizer
        out[name] = get_localizer_class(method)(conf, ds, args.cache)
    return out


def _grown_map(lm: LabelledMap, point_rows: np.ndarray, size: int, rng_seed: int) -> LabelledMap:
    """The labelled map's rows ``point_rows`` (the real points, in descriptor order) grown to ``size`` points as in
    :func:`bench_matching.grow` (same generator, so row i >= len(point_rows) copies the same source point)."""
    n = len(point_rows)
    src = np.concatenate([point_rows, point_rows[np.random.default_rng(rng_seed).integers(0, n, size - n)]])
    arrays = {k: getattr(lm, k)[src] for k in ("xyz", "label", "confidence", "track_length", "d_min", "d_max",
                                                 "view_dir", "view_spread", "cam_height")}
    arrays["xyz"] = arrays["xyz"].astype(np.float64).copy()
    arrays["xyz"][n:, 0] += FAR_M * (1 + np.arange(size - n) % 7)
    return LabelledMap(**arrays, num_classes=lm.num_classes)


def _one_size(args_dict: dict, size: int) -> dict:
    """Matching and localization stages at one map size (runs in a fresh process: its peak memory is the size's)."""
    import faiss

    args = argparse.Namespace(**args_dict)
    ds = load_dataset("cmu", args.root, parse_slices(args.slices))
    locs = _localizers(args, ds)
    base = locs["p3p"]
    map_id = sorted(base.map_paths)[0]
    m = MapDescriptors.load(base.map_paths[map_id])
    real, point_rows = matching.mean_point_descriptors(m.descriptors, m.owner)
    # the generator of grow() draws the sources first: the same seed gives the same sources in _grown_map
    x, _ = grow(real, size, np.random.default_rng(0))
    lmap = _grown_map(locs["ssmc"].labelled_map(map_id), point_rows, size, 0)
    queries = _queries(ds, map_id, args.queries)
    feats = [feature_step.read_features(base.feature_path, q.key) for q in queries]
    mconf = {**build_conf("p3p").localizer.matching}
    aconf = {**mconf, **dict(kv.split("=", 1) for kv in args.approx)}
    for k in ("ivf_nlist", "ivf_nprobe", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "seed", "num_neighbors"):
        aconf[k] = int(aconf[k])
    threads = faiss.omp_get_max_threads()
    owner = np.arange(size)
    n_exact = FEATURES if size <= 100_000 else max(512, int(FEATURES * 100_000 / size))
    out = {"size": size, "n_exact_features": n_exact}

    def run(index, c, n_feat=None):
        faiss.omp_set_num_threads(1)
        res, t, nf = [], 0.0, 0
        for f in feats:
            d = f["descriptors"][:n_feat]
            t0 = time.perf_counter()
            res.append(index.match(d, float(c["ratio_threshold"]), int(c["num_neighbors"])))
            t += time.perf_counter() - t0
            nf += len(d)
        faiss.omp_set_num_threads(threads)
        return res, FEATURES * t / max(nf, 1)

    exact = matching.DescriptorIndex(x, owner, "all", {**mconf, "index": "flat"})
    exact_res, out["flat_s_per_query"] = run(exact, mconf, n_exact)
    del exact
    t0 = time.perf_counter()
    index_dir = args.cache / "bench-scale"
    index_dir.mkdir(parents=True, exist_ok=True)
    cache = index_dir / f"grown{size}-{matching.index_tag(aconf, size)}.faiss"
    if cache.exists():
        cache.unlink()  # the build is measured
    approx = matching.DescriptorIndex(x, owner, "all", aconf, cache)
    out["approx_build_s"] = time.perf_counter() - t0
    out["approx_index"] = matching.index_tag(aconf)
    approx_res, out["approx_s_per_query"] = run(approx, aconf)
    # retention of the exact matcher's ground-truth inliers on the features the exact search saw
    kept = total = 0
    for q, f, e, a in zip(queries, feats, exact_res, approx_res):
        e_true = _true_pairs(q, f, e, lmap.xyz)
        a_pairs = set(zip(a["query_idx"].tolist(), a["point_idx"].tolist()))
        kept += len(e_true & a_pairs)
        total += len(e_true)
    out["retention"] = kept / max(total, 1)
    out["exact_inliers"] = total
    # localization from the matches of the index one would use at this size (exact_res is complete up to 10^5)
    used = exact_res if size <= 10_000 else approx_res
    out["methods"] = _localize(locs, queries, feats, dict(zip([q.key for q in queries], used)), lmap,
                               {"gsmc": args.gsmc_full_queries})
    if size == args.parallel_size:
        out["speedup_2"] = _two_workers((x, cache, aconf, queries, feats, lmap.xyz))
    out["peak_rss_gb"] = _peak_rss_gb()
    return out


def _true_pairs(q, f, res, xyz) -> set:
    """(keypoint, point) pairs of ``res`` within INLIER_PX of their projection with the query's true pose."""
    qi, pi = res["query_idx"], res["point_idx"]
    xy, valid = project_world(xyz[pi].reshape(-1, 3), q.cam_from_world, q.camera)
    err = np.linalg.norm(xy - f["keypoints"][qi].astype(np.float64).reshape(-1, 2), axis=1)
    return {pq for pq, ok in zip(zip(qi.tolist(), pi.tolist()), valid & (err < INLIER_PX)) if ok}


def _as_matches(q, f, r, xyz) -> dict:
    """A matching result in the form of :meth:`StructureLocalizer.load_matches`."""
    kps = f["keypoints"][r["query_idx"]].astype(np.float64)
    return {"keypoints": kps, "bearings": q.camera.bearings(kps), "points3D": xyz[r["point_idx"]],
            "point_idx": r["point_idx"], "query_idx": r["query_idx"]}


def _localize(locs: dict, queries, feats, results: dict, lmap: LabelledMap, limit: dict) -> dict:
    """Seconds per query (filter + RANSAC, median) and recall of every method on the given matches (method
    ``name`` on the first ``limit[name]`` queries only, when given; left out when that is 0)."""
    import torch

    torch.set_num_threads(1)
    out = {}
    for name, loc in locs.items():
        n = limit.get(name, len(queries))
        if n <= 0:  # e.g. --gsmc-full-queries 0: the method is not timed
            continue
        loc.load_matches = lambda q, f=dict(zip([q.key for q in queries], feats)): _as_matches(
            q, f[q.key], results[q.key], lmap.xyz)
        if hasattr(loc, "labelled_map"):
            loc.labelled_map = lambda mid: lmap
            loc._point_rows = {}
        times, errs = [], []
        for q in queries[:n]:
            t0 = time.perf_counter()
            res = loc.localize(q, keyed_rng(0, q.key))
            times.append(time.perf_counter() - t0)
            errs.append(pose_errors(res.cam_from_world, q.cam_from_world) if res.success else (np.inf, np.inf))
        e = np.array(errs)
        out[name] = {"s_per_query": float(np.median(times)), "recall": recall(e[:, 0], e[:, 1]),
                     "matches": float(np.median([len(results[q.key]["point_idx"]) for q in queries])),
                     "queries": len(times)}
    return out


def _worker_loop(x, index_path: Path, aconf: dict, queries, feats, xyz) -> float:
    """Approximate matching (the index read from ``index_path``) + P3P-RANSAC of the queries in this process, one
    thread; seconds after loading."""
    import faiss

    from localization import ransac

    faiss.omp_set_num_threads(1)
    index = matching.DescriptorIndex(x, np.arange(len(x)), "all", aconf, index_path)
    rconf = {k: v for k, v in dict(build_conf("p3p").localizer.ransac).items() if k != "estimator"}
    t0 = time.perf_counter()
    for q, f in zip(queries, feats):
        m = _as_matches(q, f, index.match(f["descriptors"], float(aconf["ratio_threshold"]),
                                          int(aconf["num_neighbors"])), xyz)
        ransac.p3p_ransac(m["bearings"], m["points3D"], q.camera.focal, keyed_rng(0, q.key), None, rconf)
    return time.perf_counter() - t0


def _two_workers(job: tuple) -> float:
    """Speed-up of two processes over one on the same matching + RANSAC workload (each process does all of it):
    2 x (time alone) / (time of the slower of two run together)."""
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        list(pool.map(abs, [0, 0]))  # start both processes before timing
        alone = pool.submit(_worker_loop, *job).result()
        both = [f.result() for f in [pool.submit(_worker_loop, *job) for _ in range(2)]]
    return 2 * alone / max(both)


def _queries(ds, map_id: str, n: int) -> list:
    qs = sorted((q for q in ds.queries if q.map_id == map_id), key=lambda q: (q.name, q.condition))
    return [qs[i] for i in np.linspace(0, len(qs) - 1, min(n, len(qs))).astype(int)]


def _sift_costs(ds, base, n_images: int) -> dict:
    """Seconds per image of SIFT (one thread) at the images' size and at each benchmark's size."""
    import cv2

    from fgsn.utils.io import read_image

    ext = feature_step.SiftExtractor(base.conf.features)
    images = [read_image(q.path, grayscale=True) for q in _queries(ds, sorted(base.map_paths)[0], n_images)]
    sizes = {"seasons-mini": None, **{name: wh for name, (*_, wh) in BENCHMARKS.items()}}
    out = {}
    for name, wh in sizes.items():
        t, n = [], []
        for im in images:
            im = im if wh is None else cv2.resize(im, wh, interpolation=cv2.INTER_AREA)
            t0 = time.perf_counter()
            n.append(len(ext(im)["keypoints"]))
            t.append(time.perf_counter() - t0)
        out[name] = {"s_per_image": float(np.median(t)), "features": float(np.median(n)),
                     "size": f"{im.shape[1]} x {im.shape[0]}"}
    return out


def _map_descriptor_cost(ds, base) -> float:
    """Seconds per 3D point of the map descriptor step on the first real map."""
    map_id = sorted(base.map_paths)[0]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sfm_map.main(base.conf.map, ds, map_id, base.feature_path, Path(tmp) / "map.h5", overwrite=True)
        dt = time.perf_counter() - t0
    return dt / len(MapDescriptors.load(base.map_paths[map_id]).xyz)


def _interp(sizes_out: list[dict], size: int, key) -> tuple[float, str]:
    """A measured per-size value at ``size``: measured if present, else linear in the size from the nearest
    measured one (flagged)."""
    by = {o["size"]: o for o in sizes_out}
    if size in by:
        return key(by[size]), ""
    near = min(by, key=lambda s: abs(np.log(s / size)))
    return key(by[near]) * size / near, f" (from {near:,}, x{size / near:g})"


def _projection(sift: dict, per_point: float, sizes_out: list[dict], speedup: float) -> list[str]:
    rows = ["| benchmark | method | matcher | SIFT [h] | map descriptors + index [h] | matching [h] | "
            "filter + RANSAC [h] | total, 1 worker [h] | total, 2 workers [h] |", "|---|---|---|---|---|---|---|---|---|"]
    for bench, (n_db, n_q, n_maps, points, _) in BENCHMARKS.items():
        t_sift = sift[bench]["s_per_image"] * (n_db + n_q) / 3600
        for matcher in ("flat", "approx"):
            t_match, note = _interp(sizes_out, points, lambda o: o[f"{matcher}_s_per_query"])
            build = 0.0 if matcher == "flat" else _interp(sizes_out, points, lambda o: o["approx_build_s"])[0]
            t_maps = n_maps * (per_point * points + build) / 3600
            label = "flat" if matcher == "flat" else sizes_out[0]["approx_index"]
            for method in sizes_out[0]["methods"]:  # the methods timed (not GSMC with --gsmc-full-queries 0)
                t_loc = _interp(sizes_out, points, lambda o: o["methods"][method]["s_per_query"])[0] * n_q / 3600
                total = t_sift + t_maps + t_match * n_q / 3600 + t_loc
                rows.append(f"| {bench} | {method} | {label}{note} | {t_sift:.1f} | {t_maps:.2f} | "
                            f"{t_match * n_q / 3600:.1f} | {t_loc:.1f} | {total:.1f} | {total / speedup:.1f} |")
    return rows


def main() -> None:
    parser = seasons_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000,5000000", help="map sizes in points")
    parser.add_argument("--queries", type=int, default=6, help="queries of the first slice, spread over conditions")
    parser.add_argument("--sift-images", type=int, default=4, help="images timed for SIFT")
    parser.add_argument("--gsmc-full-queries", type=int, default=2, help="queries timed with GSMC at full fidelity")
    parser.add_argument("--approx", nargs="*", default=["index=ivf"], help="matching conf of the approximate index")
    parser.add_argument("--parallel-size", type=int, default=100_000, help="map size of the two-worker measurement")
    parser.add_argument("overrides", nargs="*", help="label source for SSMC / GSMC (key=value); default: stand-in")
    args = parser.parse_args()
    t_start = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]

    ds = load_dataset("cmu", args.root, parse_slices(args.slices))
    args.cache.mkdir(parents=True, exist_ok=True)
    if not args.overrides:
        _write_standin_labels(ds, args.cache / "standin-labels.h5")
    locs = _localizers(args, ds)
    for loc in locs.values():  # features, maps, matches, labels, labelled maps (cached)
        loc.prepare()
    base = locs["p3p"]
    print(f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    sift = _sift_costs(ds, base, args.sift_images)
    per_point = _map_descriptor_cost(ds, base)
    sizes_out = []
    for size in sizes:
        print(f"(map of {size:,} points ...)", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            sizes_out.append(pool.submit(_one_size, vars(args), size).result())
    speedup = next((o["speedup_2"] for o in sizes_out if "speedup_2" in o), 1.0)

    print(f"\n{args.queries} queries of {args.root} slice {sorted(base.map_paths)[0]}, one thread per stage, "
          f"load average {os.getloadavg()[0]:.2f} at the end, {time.perf_counter() - t_start:.0f} s in all\n")
    print("| SIFT at | image size | features | s / image |\n|---|---|---|---|")
    for name, s in sift.items():
        print(f"| {name} | {s['size']} | {s['features']:.0f} | {s['s_per_image']:.3f} |")
    print(f"\nmap descriptors: {per_point * 1e6:.1f} s per 10^6 points\n")
    print("| points | exact: s / 8,192 features | approximate | build [s] | s / 8,192 features | ratio to exact | "
          "exact inliers | retention [%] | peak memory [GB] |\n|---|---|---|---|---|---|---|---|---|")
    for o in sizes_out:
        note = "" if o["n_exact_features"] >= FEATURES else f" ({o['n_exact_features']} features / query)"
        print(f"| {o['size']:,} | {o['flat_s_per_query']:.3f}{note} | {o['approx_index']} | {o['approx_build_s']:.1f} | "
              f"{o['approx_s_per_query']:.3f} | {o['approx_s_per_query'] / o['flat_s_per_query']:.4f} | "
              f"{o['exact_inliers']} | {100 * o['retention']:.1f} | {o['peak_rss_gb']:.2f} |")
    timed = list(sizes_out[0]["methods"])
    print("\n| points | matcher used | " + " | ".join(f"{m}: s / query, recall" for m in timed) + " |")
    print("|---|---|" + "---|" * len(timed))
    for o in sizes_out:
        used = "flat" if o["size"] <= 10_000 else o["approx_index"]
        print(f"| {o['size']:,} | {used} | " + " | ".join(
            f"{r['s_per_query']:.3f}, " + ("-" if m != "p3p" and not m.startswith("p3p-") and not args.overrides else
                                           " / ".join(f"{x:.0f}" for x in r["recall"]))
            for m, r in o["methods"].items()) + " |")
    print(f"\nspeed-up of a second worker (matching + RANSAC at {args.parallel_size:,} points): {speedup:.2f}\n")
    print("\n".join(_projection(sift, per_point, sizes_out, speedup)))


if __name__ == "__main__":
    main()
