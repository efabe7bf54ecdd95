"""Small datasets in the published 7-Scenes and Cambridge Landmarks layouts, built from known poses."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from reconstruction.geometry import random_rotation, rotmat_to_qvec

REAL_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _image(path: Path, rng: np.random.Generator, size=(40, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 255, (*size, 3), dtype=np.uint8))


@pytest.fixture
def seven_scenes(tmp_path):
    """``chess/`` with seq-01 (train, 6 frames) and seq-02 (test, 3 frames); returns (root, poses) with
    poses[name] = 4x4 camera-to-world."""
    rng = np.random.default_rng(0)
    root = tmp_path / "chess"
    poses = {}
    for seq, n in (("seq-01", 6), ("seq-02", 3)):
        for i in range(n):
            M = np.eye(4)
            M[:3, :3] = random_rotation(rng)
            M[:3, 3] = rng.normal(size=3)
            name = f"{seq}/frame-{i:06d}"
            _image(root / f"{name}.color.png", rng)
            np.savetxt(root / f"{name}.pose.txt", M, fmt="%.9e", delimiter="\t ")
            poses[name] = M
    (root / "TrainSplit.txt").write_text("sequence1\n")
    (root / "TestSplit.txt").write_text("sequence2\n")
    return root, poses


@pytest.fixture
def cambridge(tmp_path):
    """``KingsCollege/`` with 5 training and 2 test images; returns (root, poses) with
    poses[name] = (centre (3,), world-to-camera qvec (4,))."""
    rng = np.random.default_rng(1)
    root = tmp_path / "KingsCollege"
    poses = {}
    for split, names in (("train", [f"seq1/frame{i:05d}.png" for i in range(1, 6)]),
                         ("test", [f"seq2/frame{i:05d}.png" for i in range(1, 3)])):
        lines = ["Visual Landmark Dataset V1", "ImageFile, Camera Position [X Y Z W P Q R]", ""]
        for name in names:
            _image(root / name, rng)
            c = rng.normal(size=3) * 10
            q = rotmat_to_qvec(random_rotation(rng))
            poses[name] = (c, q)
            lines.append(f"{name} " + " ".join(f"{v:.6f}" for v in [*c, *q]))
        (root / f"dataset_{split}.txt").write_text("\n".join(lines) + "\n")
    return root, poses


@pytest.fixture
def seasons_mini_cmu():
    """``../shared/data/seasons-mini/cmu`` (relative to the repository root); skips when absent."""
    root = REAL_DATA / "seasons-mini" / "cmu"
    if not root.is_dir():
        pytest.skip("../shared/data/seasons-mini not available")
    return root
