"""Shared fixtures: the real data beside the repository (``../shared/data``), skipped cleanly when absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GLOG_minloglevel", "2")  # pycolmap's C++ logging

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def seasons_cmu(shared_data) -> Path:
    root = shared_data / "seasons-mini" / "cmu"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root


@pytest.fixture(scope="session")
def seasons_robotcar(shared_data) -> Path:
    root = shared_data / "seasons-mini" / "robotcar"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root


# A small generated street (one slice, 14 database frames, 4 queries per condition) with ground-truth semantics,
# its triangulated map and a label file made from the ground-truth class PNGs: the common input of the tests of
# the semantic methods (label-map, SSMC, GSMC, PFSL). Built once per test session.
SEMANTIC_DEMO_OVERRIDES = ["trajectory.n_database=14", "trajectory.n_queries=4", "conditions=[dusk,night]",
                           "write_correspondences=false"]


@pytest.fixture(scope="session")
def semantic_demo(tmp_path_factory):
    """(dataset root, cache dir, ground-truth label file) of a small generated dataset with its built map."""
    from fgsn.utils.config import merge_config
    from reconstruction import build_map, semantics, synthetic
    from reconstruction.datasets import load_dataset

    root = tmp_path_factory.mktemp("semantic_demo")
    data, cache = root / "data", root / "cache"
    synthetic.main(merge_config(synthetic.default_conf, overrides=SEMANTIC_DEMO_OVERRIDES), data)
    ds = load_dataset("cmu", data)
    for map_id, src in ds.maps.items():
        build_map.main(merge_config(build_map.default_conf), ds, map_id, src.model_path, cache)
    labels = semantics.labels_from_pngs(synthetic.ground_truth_label_items(ds), cache / "labels-gt.h5",
                                        len(synthetic.CLASSES))
    return data, cache, labels
