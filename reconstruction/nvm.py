"""Reader for NVM_V3 models (VisualSfM; RobotCar Seasons' ``3D-models/all-merged/all.nvm``) into pycolmap.

Format (Wu, VisualSfM documentation)::

    NVM_V3
    <num_cameras>
    <name> <focal> <qw> <qx> <qy> <qz> <cx> <cy> <cz> <radial> 0      # world-to-camera quaternion, centre C
    <num_points>
    <x> <y> <z> <r> <g> <b> <n> (<image_index> <feature_index> <mx> <my>) * n

Measurements (mx, my) are relative to the image centre (w/2, h/2) in COLMAP's pixel convention (checked on the
RobotCar Seasons model: reprojection error 0.23 px with the centre, 7.9 px with the principal point), so the
project's pixel (integer = pixel centre) is ``mx + w/2 - 0.5``. Model names say ``.png``; the files are
``.jpg``: names are matched on their stem.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .camera import Camera
from .records import DatasetError
from .geometry import pose_from_qvec_center


def _tokens(path: Path):
    if not path.is_file():
        raise DatasetError(f"{path}: NVM model file not found")
    with open(path) as f:
        lines = [(i, ln.split()) for i, ln in enumerate(f, 1)]
    return [(i, t) for i, t in lines if t]


def _parse_cameras(path: Path):
    lines = _tokens(path)
    if not lines or lines[0][1][0] != "NVM_V3":
        raise DatasetError(f"{path}: not an NVM_V3 file (first line must be 'NVM_V3')")
    k = 1
    try:
        n_cams = int(lines[k][1][0])
    except (IndexError, ValueError):
        raise DatasetError(f"{path}:{lines[k][0] if k < len(lines) else '?'}: expected the number of cameras") from None
    cams = []
    for lineno, t in lines[k + 1 : k + 1 + n_cams]:
        if len(t) < 9:
            raise DatasetError(f"{path}:{lineno}: camera line needs 'name f qw qx qy qz cx cy cz ...'")
        try:
            vals = np.array([float(v) for v in t[1:9]])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: non-numeric camera values") from None
        cams.append((t[0], vals[0], pose_from_qvec_center(vals[1:5], vals[5:8])))
    if len(cams) != n_cams:
        raise DatasetError(f"{path}: header announces {n_cams} cameras, file has {len(cams)}")
    return lines, k + 1 + n_cams, cams


def _key(name: str) -> str:
    """``./overcast-reference/rear/123.png`` -> ``overcast-reference/rear/123``."""
    return str(Path(name.lstrip("./")).with_suffix(""))


def read_nvm_poses(path: str | Path) -> dict[str, np.ndarray]:
    """Image key (``condition/camera/<ts>``, no extension) -> (3, 4) cam_from_world of every NVM camera."""
    _, _, cams = _parse_cameras(Path(path))
    return {_key(name): pose for name, _, pose in cams}


def read_nvm(path: str | Path, camera_of: Callable[[str], tuple[str, Camera]]):
    """Read an NVM model into a ``pycolmap.Reconstruction`` with images, poses, points and tracks.

    Args:
        path: the ``.nvm`` file.
        camera_of: image key -> (image name to use in the reconstruction, intrinsics). The NVM focal length is
            not used: the dataset's intrinsics are authoritative.
    Returns:
        pycolmap.Reconstruction; 2D observations in COLMAP pixel convention, world units of the model.
    Raises:
        DatasetError: malformed file (names the line), point referencing an unknown camera.
    """
    import pycolmap

    path = Path(path)
    lines, k, cams = _parse_cameras(path)
    rec = pycolmap.Reconstruction()
    cam_ids: dict[Camera, int] = {}
    image_sizes = []
    obs_per_image: list[list[tuple[float, float]]] = [[] for _ in cams]
    for i, (name, _, pose) in enumerate(cams):
        img_name, camera = camera_of(_key(name))
        if camera not in cam_ids:
            cid = len(cam_ids) + 1
            rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=cid, model=camera.model, width=camera.width,
                                                            height=camera.height, params=list(camera.params)))
            cam_ids[camera] = cid
        image_sizes.append((camera.width, camera.height, cam_ids[camera], img_name, pose))
    # points
    try:
        n_pts = int(lines[k][1][0]) if k < len(lines) else 0
    except ValueError:
        raise DatasetError(f"{path}:{lines[k][0]}: expected the number of points") from None
    points = []
    for lineno, t in lines[k + 1 : k + 1 + n_pts]:
        try:
            xyz = np.array([float(v) for v in t[:3]])
            rgb = np.array([int(float(v)) for v in t[3:6]], dtype=np.uint8)
            n = int(t[6])
            meas = np.array([float(v) for v in t[7 : 7 + 4 * n]]).reshape(n, 4)
        except (ValueError, IndexError):
            raise DatasetError(f"{path}:{lineno}: malformed point line") from None
        track = []
        for img_idx, _, mx, my in meas:
            img_idx = int(img_idx)
            if not 0 <= img_idx < len(cams):
                raise DatasetError(f"{path}:{lineno}: point observed in unknown image index {img_idx}")
            w, h = image_sizes[img_idx][:2]
            track.append((img_idx, len(obs_per_image[img_idx])))
            obs_per_image[img_idx].append((mx + w / 2, my + h / 2))  # COLMAP convention (centre at +0.5)
        points.append((xyz, rgb, track))
    if len(points) != n_pts:
        raise DatasetError(f"{path}: header announces {n_pts} points, file has {len(points)}")
    for i, (w, h, cid, img_name, pose) in enumerate(image_sizes):
        kp = np.array(obs_per_image[i], dtype=np.float64).reshape(-1, 2)
        image = pycolmap.Image(name=img_name, keypoints=kp, camera_id=cid, image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pose))
    for xyz, rgb, track in points:
        tr = pycolmap.Track()
        for img_idx, p2d in track:
            tr.add_element(img_idx + 1, p2d)
        rec.add_point3D(xyz, tr, rgb)
    return rec
