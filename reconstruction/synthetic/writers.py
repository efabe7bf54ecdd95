"""Writers of the synthetic dataset (file layout and formats in the package docstring): pose and odometry text
lines, text files, JPEG/PNG images, the correspondence files (HDF5, MATLAB v7.3 style) and the exact
cross-condition correspondences computed from the depth buffers.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np

from fgsn.utils.io import atomic_path

from ..geometry import rotmat_to_qvec
from .camera import SynthCamera
from .conditions import _frame_rng, render_view
from .render import render_geometry

def _pose_line(name: str, T: np.ndarray) -> str:
    q = rotmat_to_qvec(T[:, :3])
    C = -T[:, :3].T @ T[:, 3]
    return f"{name} " + " ".join(f"{v:.9f}" for v in (*q, *C))


def _write_lines(path: Path, lines: list[str], header: list[str] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"# {h}\n" for h in header) + "".join(line + "\n" for line in lines))


def _write_image(path: Path, img: np.ndarray, quality: int) -> None:
    """Encode ``img`` by ``path``'s suffix (JPEG at ``quality``, or PNG) and write it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if path.suffix == ".jpg" else [])
    if not ok:
        raise OSError(f"Could not encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def _write_correspondence(path: Path, im_i: str, im_j: str, pt_i: np.ndarray, pt_j: np.ndarray, wh) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    c = np.array([(wh[0] - 1) / 2, (wh[1] - 1) / 2])
    dist = np.linalg.norm(pt_i - c, axis=1, keepdims=True) / (0.5 * math.hypot(*wh))
    with h5py.File(path, "w") as f:
        f.create_dataset("im_i_path", data=np.array([ord(ch) for ch in im_i], np.uint16)[:, None])
        f.create_dataset("im_j_path", data=np.array([ord(ch) for ch in im_j], np.uint16)[:, None])
        f.create_dataset("pt_i", data=pt_i.astype(np.float64))
        f.create_dataset("pt_j", data=pt_j.astype(np.float64))
        f.create_dataset("dist_from_center", data=dist.astype(np.float64))


def correspondences(geo_i: dict, T_i: np.ndarray, geo_j: dict, T_j: np.ndarray, cam: SynthCamera,
                    n_points: int, depth_tol: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exact correspondences between two rendered views from the depth buffers.

    Args:
        geo_i, geo_j: outputs of :func:`render_geometry` (or :func:`render_view`) for views i and j.
        T_i, T_j: (3, 4) cam_from_world of the views.
        n_points: pixels of view i sampled (uniformly among non-sky pixels).
        depth_tol: relative depth tolerance of the occlusion test in view j.
    Returns:
        pt_i, pt_j: (N, 2) float64 pixels (x, y), integer = pixel centre; pt_i are integer pixel centres.
    """
    ys, xs = np.nonzero(np.isfinite(geo_i["depth"]))
    if len(xs) == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    sel = rng.choice(len(xs), size=min(n_points, len(xs)), replace=False)
    xs, ys = xs[sel], ys[sel]
    rays = cam.rays()[ys, xs]  # (N, 3), z = 1
    z = geo_i["depth"][ys, xs]
    Ri, ti = T_i[:, :3], T_i[:, 3]
    Xw = (rays * z[:, None] - ti) @ Ri  # R^T (X_cam - t)
    pc = Xw @ T_j[:, :3].T + T_j[:, 3]
    uv, ok = cam.project(pc)
    ok &= (uv[:, 0] > -0.5) & (uv[:, 0] < cam.width - 0.5) & (uv[:, 1] > -0.5) & (uv[:, 1] < cam.height - 0.5)
    ui = np.clip(np.round(uv[:, 0]).astype(int), 0, cam.width - 1)
    vi = np.clip(np.round(uv[:, 1]).astype(int), 0, cam.height - 1)
    dj = geo_j["depth"][vi, ui]
    ok &= np.abs(dj - pc[:, 2]) < depth_tol * pc[:, 2]
    return np.stack([xs, ys], 1).astype(np.float64)[ok], uv[ok]


def _odometry_lines(frames: list) -> list[str]:
    lines = []
    for (n0, T0), (n1, T1) in zip(frames[:-1], frames[1:]):
        R = T1[:, :3] @ T0[:, :3].T
        t = T1[:, 3] - R @ T0[:, 3]
        q = rotmat_to_qvec(R)
        lines.append(f"{n0} {n1} " + " ".join(f"{v:.9f}" for v in (*q, *t)))
    return lines


def _write_slice_correspondences(conf, out_dir, slice_id, scene, cam, plan, sdir, overwrite):
    from tqdm import tqdm

    cc = conf.correspondence
    root = out_dir / "correspondence" / f"slice{slice_id}"
    db = plan["database"]
    rng = np.random.default_rng([conf.seed, slice_id, 2])
    pairs = []
    for cond in conf.conditions:
        seen = set()
        for _ in range(cc.n_pairs):
            for _attempt in range(20):
                i = int(rng.integers(len(db)))
                j = int(np.clip(i + rng.integers(-cc.max_index_offset, cc.max_index_offset + 1), 0, len(db) - 1))
                if (i, j) not in seen:
                    break
            seen.add((i, j))
            pairs.append((cond, i, j))
    for cond, i, j in tqdm(pairs, desc=f"slice{slice_id} correspondences"):
        (ni, Ti), (nj, Tj) = db[i], db[j]
        rel_i, rel_j = f"slice{slice_id}/reference/{ni}", f"slice{slice_id}/{cond}/{nj}"
        mat = root / "correspondence_data" / f"correspondence_slice{slice_id}_runref_run{cond}_c{i}_c{j}.mat"
        if mat.exists() and (root / "images" / rel_j).exists() and not overwrite:
            continue
        src = sdir / "database" / ni
        (root / "images" / rel_i).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / "images" / rel_i)
        rj = render_view(scene, cam, Tj, cond, _frame_rng(conf.seed, slice_id, cond, j, purpose=1))
        _write_image(root / "images" / rel_j, rj["image"], conf.jpeg_quality)
        gi = render_geometry(scene, cam, Ti)
        pt_i, pt_j = correspondences(gi, Ti, rj, Tj, cam, cc.n_points, cc.depth_tolerance,
                                     np.random.default_rng([conf.seed, slice_id, i, j, 3]))
        _write_correspondence(mat, rel_i, rel_j, pt_i, pt_j, (cam.width, cam.height))
