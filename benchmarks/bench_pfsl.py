"""PFSL without ground truth: odometry source x initialisation on a generated street, against P3P-RANSAC.

    python benchmarks/bench_pfsl.py [--out outputs/bench/pfsl-street] [generator key=value ...]

Generates (once) a street with ground-truth semantics (default: one slice, 60 database frames, 20 queries in each
of dusk and night), triangulates its map, uses the generator's exact labels as PFSL's label source, and runs every
combination of ``pfsl.odometry.source`` in (file, visual, gt) and ``pfsl.init.method`` in (p3p, database), visual
odometry also with the fixed motion noise instead of its own (``odometry.visual.noise=fixed``), plus P3P-RANSAC; prints recall at (0.25 m, 2°) / (0.5 m, 5°) / (5 m, 10°) per run. Runs resume.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from _common import REPO  # noqa: E402
from evaluation import evaluate  # noqa: E402
from fgsn.utils.config import merge_config  # noqa: E402
from localization import localize  # noqa: E402
from reconstruction import build_map, semantics, synthetic  # noqa: E402
from reconstruction.datasets import load_dataset  # noqa: E402

STREET = ["trajectory.n_database=60", "trajectory.n_queries=20", "conditions=[dusk,night]",
          "write_correspondences=false"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "pfsl-street")
    parser.add_argument("overrides", nargs="*", help="generator overrides (key=value), after the defaults")
    args = parser.parse_args()
    data, cache = args.out / "data", args.out / "cache"
    if not data.exists():
        synthetic.main(merge_config(synthetic.default_conf, overrides=[*STREET, *args.overrides]), data)
    ds = load_dataset("cmu", data)
    for map_id, src in ds.maps.items():
        if not (src.model_path / "points3D.bin").exists():
            build_map.main(merge_config(build_map.default_conf), ds, map_id, src.model_path, cache)
    labels = cache / "labels-gt.h5"
    if not labels.exists():
        semantics.labels_from_pngs(synthetic.ground_truth_label_items(ds), labels, len(synthetic.CLASSES))
    base = [f"cache_dir={cache}", "localizer.semantics.source=labels", f"localizer.semantics.labels={labels}"]
    runs = {"P3P-RANSAC": ("p3p", [f"cache_dir={cache}"])}
    for odo in ("file", "visual", "visual-fixed-noise", "gt"):
        src = odo.removesuffix("-fixed-noise")
        noise = ["localizer.pfsl.odometry.visual.noise=fixed"] if odo != src else []
        for init in ("p3p", "database"):
            runs[f"PFSL odometry={odo} init={init}"] = ("pfsl", [*base, f"localizer.pfsl.odometry.source={src}",
                                                                f"localizer.pfsl.init.method={init}", *noise])
    rows = []
    for name, (method, over) in runs.items():
        out = args.out / "runs" / name.replace(" ", "_").replace("=", "-")
        sub = localize.main(localize.build_conf(method, overrides=over), ds, out, resume=True)
        rows.append((name, evaluate.main(ds, sub, out)["all"]["recall"]))
    print(f"\n{len(ds.queries)} queries; recall (0.25 m, 2°) / (0.5 m, 5°) / (5 m, 10°)\n\n| run | recall |\n|---|---|")
    for name, r in rows:
        print(f"| {name} | {' / '.join(f'{x:.1f}' for x in r)} |")


if __name__ == "__main__":
    main()
