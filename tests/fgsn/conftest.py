"""Fixtures of the FGSN tests: a tiny synthetic correspondence dataset in the real file format."""
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _write_mat(path: Path, im_i: str, im_j: str, pt_i: np.ndarray, pt_j: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f["im_i_path"] = np.array([ord(c) for c in im_i], dtype=np.uint16)[:, None]
        f["im_j_path"] = np.array([ord(c) for c in im_j], dtype=np.uint16)[:, None]
        f["pt_i"] = pt_i.astype(np.float64)
        f["pt_j"] = pt_j.astype(np.float64)
        f["dist_from_center"] = np.zeros((len(pt_i), 1))


@pytest.fixture(scope="session")
def tiny_corr_root(tmp_path_factory) -> Path:
    """slice1 with 3 reference images (64x96) and, per image, a 'snow' version shifted by (+4, +2) pixels."""
    root = tmp_path_factory.mktemp("corr")
    sl = root / "slice1"
    (sl / "correspondence_data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        base = cv2.resize(rng.integers(0, 255, (8, 12, 3)).astype(np.uint8), (96, 64), interpolation=cv2.INTER_NEAREST)
        tgt = np.roll(base, (2, 4), axis=(0, 1))
        tgt = np.clip(tgt.astype(np.int32) // 2 + 20, 0, 255).astype(np.uint8)  # darker "condition"
        for cond, img in (("reference", base), ("snow", tgt)):
            (sl / "images" / "slice1" / cond).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(sl / "images" / "slice1" / cond / f"img_{i}.png"), img)
        for k in range(3):  # three files per image pair
            pts = np.stack([rng.uniform(0, 90, 40), rng.uniform(0, 60, 40)], 1).round()
            _write_mat(sl / "correspondence_data" / f"correspondence_slice1_runref_runsnow_c{i}_c{k}.mat",
                       f"slice1/reference/img_{i}.png", f"slice1/snow/img_{i}.png", pts, pts + [4, 2])
    return root
