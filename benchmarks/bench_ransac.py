"""Our P3P-RANSAC against pycolmap's LO-RANSAC on the same cached 2D-3D matches of seasons-mini (CMU layout).

    python benchmarks/bench_ransac.py [--root ../shared/data/seasons-mini/cmu] [--slices 1,2] [--cache DIR]

Our estimator runs twice, with the fixed iteration count (the paper's) and with early termination
(``ransac.adaptive``). All see exactly the same matches (features, map descriptors and matches come from the
localization cache, computed once). Prints recall at the three thresholds per condition and the median time per
query of each estimator, and the time ratios against pycolmap measured in the same process.
"""
from __future__ import annotations

import os
import time

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

from _common import seasons_parser  # noqa: E402
from evaluation.evaluate import THRESHOLDS, recall  # noqa: E402
from fgsn.utils.seeding import keyed_rng  # noqa: E402
from localization.localize import build_conf  # noqa: E402
from localization.ransac import p3p_ransac, pycolmap_ransac  # noqa: E402
from localization.structure import StructureLocalizer  # noqa: E402
from reconstruction.datasets import load_dataset, parse_slices  # noqa: E402
from reconstruction.geometry import pose_errors  # noqa: E402


def main() -> None:
    parser = seasons_parser(__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10000,
                        help="our RANSAC's fixed iteration count (the maximum of the adaptive run)")
    args = parser.parse_args()

    ds = load_dataset("cmu", args.root, parse_slices(args.slices))
    conf = build_conf("p3p").localizer
    loc = StructureLocalizer(conf, ds, args.cache)
    loc.prepare()
    rconf = {k: v for k, v in conf.ransac.items() if k != "estimator"}
    rconf["num_iterations"] = args.iterations
    estimators = {
        "ours": lambda q, m: p3p_ransac(m["bearings"], m["points3D"], q.camera.focal, keyed_rng(0, q.key), conf=rconf),
        "ours, adaptive": lambda q, m: p3p_ransac(m["bearings"], m["points3D"], q.camera.focal, keyed_rng(0, q.key),
                                                  conf={**rconf, "adaptive": True}),
        "pycolmap": lambda q, m: pycolmap_ransac(m["keypoints"], m["points3D"], q.camera, rconf),
    }
    rows = {name: {} for name in estimators}
    for q in ds.queries:
        m = loc.load_matches(q)
        for name, run in estimators.items():
            t0 = time.perf_counter()
            res = run(q, m)
            dt = time.perf_counter() - t0
            err = pose_errors(res.cam_from_world, q.cam_from_world) if res.success else (np.inf, np.inf)
            rows[name][q.name] = (q.condition, *err, dt, res.num_iterations)
    conds = sorted({q.condition for q in ds.queries})
    th = " / ".join(f"({t:g} m, {r:g} deg)" for t, r in THRESHOLDS)
    print(f"\nRecall [%] at {th}, {len(ds.queries)} queries of {args.root} slices {args.slices}\n")
    print("| estimator | " + " | ".join(conds) + " | all | median time / query | median samples |")
    print("|---|" + "---|" * (len(conds) + 3))
    med = {}
    for name, r in rows.items():
        cells = []
        for c in conds + ["all"]:
            v = np.array([x[1:3] for x in r.values() if c in ("all", x[0])])
            cells.append(" / ".join(f"{x:.1f}" for x in recall(v[:, 0], v[:, 1])))
        med[name] = float(np.median([x[3] for x in r.values()]))
        samples = np.median([x[4] for x in r.values()])
        samples = f"{samples:.0f}" if samples > 0 else "-"  # pycolmap does not report its count
        print(f"| {name} | " + " | ".join(cells) + f" | {med[name] * 1000:.0f} ms | {samples} |")
    print(f"\ntime ratio ours / pycolmap: {med['ours'] / med['pycolmap']:.2f} (fixed {args.iterations} samples), "
          f"ours adaptive / pycolmap: {med['ours, adaptive'] / med['pycolmap']:.2f}, "
          f"ours / ours adaptive: {med['ours'] / med['ours, adaptive']:.2f} (pycolmap: adaptive LO-RANSAC)")


if __name__ == "__main__":
    main()
