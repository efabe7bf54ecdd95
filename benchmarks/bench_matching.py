"""Exact against approximate 2D-3D matching (``matching.index``) on the seasons-mini map grown with distractors.

    python benchmarks/bench_matching.py [--root ../shared/data/seasons-mini/cmu] [--slices 1,2] [--cache DIR]
        [--sizes 10000,100000,1000000] [--queries 8] [--exact-queries-at-1e6 1]

The first slice's real map (mean point descriptors, from the localization cache) is grown to each size with
distractor points: copies of random real points' descriptors plus Gaussian noise whose norm is the median distance
between a real point and its nearest other real point, so a distractor is as close to its source as real
neighbours are and competes in the ratio test. Real query descriptors (``--queries`` of that slice, spread over
the conditions) are matched with the exact index (``flat``) and each approximate one, searching on one thread
(index building uses every thread and is cached under ``<cache>/bench-matching``). Per size and index it prints
the median time per query, the time per 8,192 features (total time / total features), the ratio of median times
against flat on the queries flat searched in the same run, and the retention: the fraction
of the exact matcher's ground-truth inliers (reprojection error < 8 px with the query's ground-truth pose) that the
approximate matcher also returns (same keypoint, same point). At sizes >= 10^6 the exact index runs on
``--exact-queries-at-1e6`` queries only (about 50 s each), and retention is over those.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

from _common import seasons_parser  # noqa: E402
from localization import matching  # noqa: E402
from localization.localize import build_conf  # noqa: E402
from localization.structure import StructureLocalizer  # noqa: E402
from reconstruction import features as feature_step  # noqa: E402
from reconstruction.camera import project_world  # noqa: E402
from reconstruction.datasets import load_dataset, parse_slices  # noqa: E402
from reconstruction.sfm_map import MapDescriptors  # noqa: E402

INLIER_PX = 8.0
APPROX = {  # label -> matching conf overrides
    "ivf4096-p8": {"index": "ivf", "ivf_nlist": 4096, "ivf_nprobe": 8, "ivf_quantizer": "flat"},
    "ivf16384-p8-hnsw32-ef32": {"index": "ivf", "ivf_nlist": 16384, "ivf_nprobe": 8, "ivf_quantizer": "hnsw"},
    "hnsw32-ef32": {"index": "hnsw", "hnsw_m": 32, "hnsw_ef_search": 32},
    "hnsw32-ef48": {"index": "hnsw", "hnsw_m": 32, "hnsw_ef_search": 48},
}


def grow(points: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """(P, C) real point descriptors -> (size, C) with distractors appended (module docstring), noise sigma."""
    import faiss

    flat = faiss.IndexFlatL2(points.shape[1])
    flat.add(points)
    d2, _ = flat.search(points, 2)
    sigma = float(np.median(np.sqrt(d2[:, 1]))) / np.sqrt(points.shape[1])
    src = rng.integers(0, len(points), size - len(points))
    extra = np.clip(np.rint(points[src] + rng.normal(0.0, sigma, (len(src), points.shape[1]))), 0, 255)
    return np.concatenate([points, extra.astype(np.float32)]), sigma


def main() -> None:
    import faiss

    parser = seasons_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="map sizes in points, comma-separated")
    parser.add_argument("--queries", type=int, default=8, help="queries of the first slice, spread over conditions")
    parser.add_argument("--exact-queries-at-1e6", type=int, default=1, help="exact searches at sizes >= 10^6")
    parser.add_argument("--indexes", default=",".join(APPROX), help=f"approximate indexes among {list(APPROX)}")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    ds = load_dataset("cmu", args.root, parse_slices(args.slices))
    conf = build_conf("p3p").localizer
    loc = StructureLocalizer(conf, ds, args.cache)
    loc.prepare()
    map_id = sorted(loc.map_paths)[0]
    m = MapDescriptors.load(loc.map_paths[map_id])
    real, point_rows = matching.mean_point_descriptors(m.descriptors, m.owner)
    xyz = m.xyz[point_rows]
    qs = sorted((q for q in ds.queries if q.map_id == map_id), key=lambda q: (q.name, q.condition))
    qs = [qs[i] for i in np.linspace(0, len(qs) - 1, min(args.queries, len(qs))).astype(int)]
    queries = []
    for q in qs:
        f = feature_step.read_features(loc.feature_path, q.key)
        queries.append((q, f["descriptors"], f["keypoints"].astype(np.float64)))
    grown, sigma = grow(real, max(sizes), np.random.default_rng(0))
    index_dir = args.cache / "bench-matching"
    index_dir.mkdir(parents=True, exist_ok=True)
    mconf = dict(conf.matching)
    threads = faiss.omp_get_max_threads()
    print(f"\nmap {map_id}: {len(real)} real points, distractor noise sigma {sigma:.1f} per dimension; "
          f"{len(queries)} queries ({np.mean([len(d) for _, d, _ in queries]):.0f} features each), "
          f"search on 1 thread, load average {os.getloadavg()[0]:.2f}\n")
    print("| points | index | build [s] | median time / query [s] | time / 8,192 features [s] | ratio to flat "
          "| exact inliers | retention [%] |")
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        x, owner = grown[:size], np.arange(size)
        n_exact = args.exact_queries_at_1e6 if size >= 10**6 else len(queries)
        results = {}
        print(f"(growing to {size:,} points ...)", file=sys.stderr, flush=True)
        for label, over in [("flat", {"index": "flat"})] + [(k, APPROX[k]) for k in args.indexes.split(",")]:
            c = {**mconf, **over}
            faiss.omp_set_num_threads(threads)
            t0 = time.perf_counter()
            cache = None if label == "flat" else index_dir / f"grown{size}-{matching.index_tag(c, size)}.faiss"
            index = matching.DescriptorIndex(x, owner, "all", c, cache)
            build = time.perf_counter() - t0
            faiss.omp_set_num_threads(1)
            times, per8k, found = [], [], []  # per8k: features per query
            for q, desc, _ in queries[:n_exact] if label == "flat" else queries:
                t0 = time.perf_counter()
                r = index.match(desc, float(c["ratio_threshold"]), int(c["num_neighbors"]))
                times.append(time.perf_counter() - t0)
                per8k.append(len(desc))
                found.append(set(zip(r["query_idx"].tolist(), r["point_idx"].tolist())))
            results[label] = (build if index.built else float("nan"), times, 8192 * sum(times) / max(sum(per8k), 1),
                              found)
        inl = []
        for (q, _, kps), pairs in zip(queries, results["flat"][3]):
            pairs = [(i, p) for i, p in pairs if p < len(real)]
            xy, valid = project_world(xyz[[p for _, p in pairs]].reshape(-1, 3), q.cam_from_world, q.camera)
            err = np.linalg.norm(xy - kps[[i for i, _ in pairs]].reshape(-1, 2), axis=1)
            inl.append({pq for pq, ok in zip(pairs, valid & (err < INLIER_PX)) if ok})
        t_flat = float(np.median(results["flat"][1]))
        for label, (build, t, t8k, found) in results.items():
            kept = sum(len(e & a) for e, a in zip(inl, found))
            total = sum(len(e) for e in inl)
            note = f" ({n_exact} queries)" if label == "flat" and n_exact < len(queries) else ""
            ratio = float(np.median(t[:n_exact])) / t_flat  # on the queries flat searched
            print(f"| {size:,} | {label} | {build:.1f} | {float(np.median(t)):.3f}{note} | {t8k:.3f} | {ratio:.4f} | {total} | "
                  f"{100 * kept / max(total, 1):.1f} |")


if __name__ == "__main__":
    main()
