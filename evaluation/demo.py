"""``fgsn-loc demo``: the whole toolkit on its built-in synthetic dataset, under one output folder (about three
minutes on 2 idle CPU cores)::

    OUT/data/                  the generated dataset (Extended CMU layout, see reconstruction.synthetic), with
                               its cross-season correspondence dataset and odometry
    OUT/data/slice2/sparse/    the triangulated COLMAP model (fgsn-loc build-map)
    OUT/fgsn/                  a small FGSN (ResNet-18, K clusters) trained on the generated correspondences
    OUT/cache/                 features, map descriptors, matches, FGSN labels, labelled maps (+ .ply / .png)
    OUT/p3p/                   P3P-RANSAC: results.jsonl, submission.txt, eval.json, eval.md, cumulative_errors.png
    OUT/fgsn-k<K>/<method>/    the same for each semantic method (SSMC, GSMC, PFSL) with the FGSN labels
    OUT/fgsn-k<K>/<method>/figures/   per-query figures: segmentation, projected map labels, inliers
    OUT/table.md               recall per condition of every method, inlier statistics (evaluation.ablate)

Every step is resumable: running the demo again reuses what exists. ``methods=[p3p]`` skips FGSN training.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from omegaconf import OmegaConf

from fgsn.utils.config import merge_config
from fgsn.utils.logging import setup_logging
from reconstruction import build_map, synthetic
from reconstruction.datasets import load_dataset

from . import ablate, figures

logger = logging.getLogger(__name__)

SEMANTIC_METHODS = ("ssmc", "gsmc", "pfsl")

default_conf = {
    "data": synthetic.default_conf,  # the generator's configuration
    "build_map": build_map.default_conf,  # triangulation of the database images
    "methods": ["p3p", *SEMANTIC_METHODS],  # localization methods to run and evaluate
    "workers": 1,  # localization processes
    "figures_per_condition": 1,  # per-query figures (evaluation.figures) of each semantic run, per condition
    "fgsn": {  # the small FGSN of the semantic methods: overrides of fgsn.train.default_conf (CPU preset)
        "experiment": "demo-fgsn",
        "seed": 0,
        "model": {"depth": 18, "num_classes": 20},  # ResNet-18 backbone, K = 20 clusters
        "data": {"resize_short": 160, "crop_size": 128},  # network resolution and crops, pixels
        "clustering": {"recluster": False},  # cluster once at iteration 0 (the paper's best variant)
        "inference": {"patch": 128, "step": 86, "batch_size": 8},  # sliding window, pixels
        "train": {"iterations": 500, "lr": 0.01, "lr_schedule": "poly", "log_interval": 25, "val_interval": 250,
                  "val_max_pairs": 16, "save_interval": 50, "num_threads": 2},
    },
    # overrides of every method's localizer section. The demo's RANSAC draws 50 minimal samples (the paper: 10,000;
    # localizer.ransac.num_iterations=10000): with 10,000 every method localizes every demo query, with 50 uniform
    # sampling loses half of the snow queries (inlier ratio ~0.2) and GSMC's weighted sampling keeps them
    # (measured: README), which is what weighted sampling buys at a fixed budget
    "localizer": {"ransac": {"num_iterations": 50}},
    # per method: GSMC's reduced approximation (36 angles, 2,000 points) keeps the demo to minutes on a CPU; the
    # full definition: method_overrides.gsmc.gsmc.mode=full (about 8 more minutes on 2 cores)
    "method_overrides": {"gsmc": {"gsmc": {"mode": "reduced"}}},
}


def train_fgsn(conf, data_dir: Path, out_dir: Path) -> Path:
    """Train (or resume) the demo FGSN on the generated correspondences; returns its best checkpoint."""
    from fgsn import train

    c = merge_config(train.default_conf, extra=OmegaConf.to_container(conf))
    c.data.root = str(data_dir / "correspondence")
    return train.main(c, out_dir, restore=(Path(out_dir) / "checkpoints" / "last.pt").exists())


def main(conf, out_dir: Path, overwrite: bool = False) -> dict:
    """Run the demo; returns the ablation dictionary (``evaluation.ablate.main``) of all methods.

    Args:
        conf: see :data:`default_conf`.
        out_dir: output folder (resumable).
        overwrite: regenerate the dataset and the map (runs are resumed, not redone; delete OUT to start over).
    """
    out_dir = Path(out_dir)
    setup_logging(out_dir / "log.txt")
    data_dir = out_dir / "data"
    synthetic.main(conf.data, data_dir, overwrite=overwrite)
    dataset = load_dataset("cmu", data_dir)
    for map_id, src in dataset.maps.items():
        if overwrite or not (src.model_path / "points3D.bin").exists():
            build_map.main(conf.build_map, dataset, map_id, src.model_path, out_dir / "cache", overwrite=True)
    semantic = [m for m in conf.methods if m in SEMANTIC_METHODS]
    networks = []
    if semantic:
        ckpt = train_fgsn(conf.fgsn, data_dir, out_dir / "fgsn")
        k = int(conf.fgsn.model.num_classes)
        networks.append({"name": f"fgsn-k{k}", "checkpoint": str(ckpt), "num_clusters": k,
                         "segment": {"resize_short": conf.fgsn.data.resize_short, "patch": conf.fgsn.inference.patch,
                                     "step": conf.fgsn.inference.step, "batch_size": conf.fgsn.inference.batch_size}})
    baseline = [m for m in conf.methods if m not in SEMANTIC_METHODS]
    if len(baseline) > 1:
        raise ValueError(f"the demo runs one non-semantic method (the baseline row), got {baseline}")
    ab_conf = merge_config(ablate.default_conf, extra={
        "dataset": "cmu", "root": str(data_dir), "baseline": baseline[0] if baseline else None, "methods": semantic,
        "networks": networks, "columns": "conditions", "workers": conf.workers,
        "localizer": OmegaConf.to_container(conf.localizer) if conf.localizer else None,
        "method_overrides": OmegaConf.to_container(conf.method_overrides) if conf.method_overrides else None})
    result = ablate.main(ab_conf, out_dir)
    for net in networks:
        for method in semantic:
            figures.main(dataset, out_dir / net["name"] / method, int(conf.figures_per_condition))
    logger.info("Demo results: %s (the tables are logged above, once)", out_dir / "table.md")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate the dataset and the map")
    parser.add_argument("--config", type=Path, help="YAML configuration")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.trajectory.n_queries=20 methods=[p3p]")


def run(args: argparse.Namespace) -> None:
    conf = merge_config(default_conf, yaml_path=args.config, overrides=args.overrides)
    main(conf, args.out, overwrite=args.overwrite)
    print(f"Demo finished; results in {args.out} (summary: {args.out / 'table.md'})")
