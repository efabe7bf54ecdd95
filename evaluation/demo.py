"""``fgsn-loc demo``: generate the built-in synthetic dataset, triangulate its map, localize its queries with
P3P-RANSAC and evaluate, all under one output folder (a few minutes on 2 CPU cores)::

    OUT/data/          the generated dataset (Extended CMU layout, see reconstruction.synthetic)
    OUT/data/slice2/sparse/   the triangulated COLMAP model
    OUT/cache/         features, map descriptors, matches
    OUT/p3p/           results.jsonl, submission.txt, eval.json, eval.md, cumulative_errors.png

Every step is resumable: running the demo again reuses what exists.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fgsn.utils.config import merge_config
from fgsn.utils.logging import setup_logging
from localization import localize
from reconstruction import build_map, synthetic
from reconstruction.datasets import load_dataset

from . import evaluate

logger = logging.getLogger(__name__)

default_conf = {
    "data": synthetic.default_conf,  # the generator's configuration
    "build_map": build_map.default_conf,  # triangulation of the database images
    "methods": ["p3p"],  # localization methods to run and evaluate
    "workers": 1,  # localization processes
}


def main(conf, out_dir: Path, overwrite: bool = False) -> dict[str, dict]:
    """Run the demo; returns method -> eval.json dictionary."""
    out_dir = Path(out_dir)
    setup_logging(out_dir / "log.txt")
    data_dir = out_dir / "data"
    synthetic.main(conf.data, data_dir, overwrite=overwrite)
    dataset = load_dataset("cmu", data_dir)
    for map_id, src in dataset.maps.items():
        if overwrite or not (src.model_path / "points3D.bin").exists():
            build_map.main(conf.build_map, dataset, map_id, src.model_path, out_dir / "cache", overwrite=True)
    reports = {}
    for method in conf.methods:
        run_conf = localize.build_conf(method, extra={"workers": conf.workers, "cache_dir": str(out_dir / "cache")})
        run_dir = out_dir / method
        submission = localize.main(run_conf, dataset, run_dir, resume=not overwrite, overwrite=overwrite)
        reports[method] = evaluate.main(dataset, submission, run_dir)
        logger.info("%s:\n%s", method, (run_dir / "eval.md").read_text())
    return reports


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate everything")
    parser.add_argument("--config", type=Path, help="YAML configuration")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.trajectory.n_queries=20")


def run(args: argparse.Namespace) -> None:
    conf = merge_config(default_conf, yaml_path=args.config, overrides=args.overrides)
    main(conf, args.out, overwrite=args.overwrite)
    print(f"Demo finished; results in {args.out}")
