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

The file is read as a stream, one line at a time (RobotCar Seasons' model is about a gigabyte of text): the
points block is parsed in chunks of lines into NumPy arrays (:class:`NVMModel`), never into per-point Python
objects. Blank lines are skipped everywhere.

VisualSfM can write several models into one file (each a camera block and a points block; a line ``0`` ends
the list). :func:`read_nvm_arrays` / :func:`read_nvm` read the model chosen with ``model`` (0-based; the ones
before it are skipped line by line, unparsed); with ``model=None`` a file holding more than one model is an
error naming the count of the next model, never silently its first one. :func:`read_nvm_poses` parses only the
chosen model's camera block (with ``model=None`` it skims the rest to check there is one model,
:func:`count_models`).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .camera import Camera
from .records import DatasetError, text_lines
from .geometry import pose_from_qvec_center

_CHUNK_LINES = 16384  # point lines parsed together (bounds the temporary Python token lists)
_TRACK_CHUNK = 65536  # points whose tracks are handed to pycolmap together


@dataclass
class NVMCameras:
    """The camera block of an NVM model.

    Attributes:
        names: (C,) image names as written in the file (``./overcast-reference/rear/<ts>.png``).
        focal: (C,) focal lengths, pixels.
        cam_from_world: (C, 3, 4) rigid transforms, world -> camera, world units of the model.
    """

    names: list[str]
    focal: np.ndarray
    cam_from_world: np.ndarray


@dataclass
class NVMModel:
    """The first model of an NVM file as arrays; M = ``track_length.sum()`` observations, in file order.

    Attributes:
        cameras: the camera block.
        xyz: (P, 3) float64 point positions, world units of the model.
        rgb: (P, 3) uint8 point colours.
        track_length: (P,) int64 number of observations of each point; point p's observations are
            ``track_start[p] : track_start[p] + track_length[p]`` of the flat arrays below.
        image_idx: (M,) int32 0-based index of the observing camera in ``cameras``.
        feature_idx: (M,) int32 feature index in that image's feature file (as written; not used by COLMAP).
        xy: (M, 2) float64 measurements (x, y) relative to the image centre, pixels.
    """

    cameras: NVMCameras
    xyz: np.ndarray
    rgb: np.ndarray
    track_length: np.ndarray
    image_idx: np.ndarray
    feature_idx: np.ndarray
    xy: np.ndarray

    @property
    def track_start(self) -> np.ndarray:
        """(P,) int64 offset of each point's first observation in the flat observation arrays."""
        return np.cumsum(self.track_length) - self.track_length


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, tokens) of each non-blank line of ``path``, read one line at a time."""
    if not path.is_file():
        raise DatasetError(f"{path}: NVM model file not found")
    for lineno, line in text_lines(path):
        tokens = line.split()
        if tokens:
            yield lineno, tokens


def _int_or_none(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def _read_count(path: Path, lines: Iterator[tuple[int, list[str]]], what: str,
                last: int) -> tuple[int | None, int]:
    """The next line as a count of ``what``: (count, its line number). End of file -> (None, last)."""
    item = next(lines, None)
    if item is None:
        return None, last
    lineno, tokens = item
    try:
        count = int(tokens[0])
    except ValueError:
        count = -1
    if count < 0:
        raise DatasetError(f"{path}:{lineno}: expected the number of {what}")
    return count, lineno


def _skip_models(path: Path, lines: Iterator[tuple[int, list[str]]], model: int) -> int:
    """Consume the header and the ``model`` models before the chosen one; returns the last line number read."""
    first = next(lines, None)
    if first is None or first[1][0] != "NVM_V3":
        raise DatasetError(f"{path}: not an NVM_V3 file (first line must be 'NVM_V3')")
    lineno = first[0]
    for k in range(model):
        for what in ("cameras", "points"):
            n, lineno = _read_count(path, lines, what, lineno)
            if not n and what == "cameras":
                raise DatasetError(f"{path}:{lineno}: model {model} asked for, the file holds {k}")
            for lineno, _ in zip(range(n or 0), lines):
                pass
    return lineno


def _parse_cameras(path: Path, lines: Iterator[tuple[int, list[str]]], model: int = 0) -> tuple[NVMCameras, int]:
    """Header (and the models before ``model``) and the camera block, consumed from ``lines``: (cameras, number
    of the last line read)."""
    n_cams, lineno = _read_count(path, lines, "cameras", _skip_models(path, lines, model))
    if n_cams is None or (model > 0 and n_cams == 0):
        raise DatasetError(f"{path}:{lineno}: file ends before the number of cameras of model {model}")
    names, focal, poses = [], [], []  # lists: a corrupt count allocates nothing
    for _, (lineno, t) in zip(range(n_cams), lines):
        if len(t) < 9:
            raise DatasetError(f"{path}:{lineno}: camera line needs 'name f qw qx qy qz cx cy cz ...'")
        if not Path(t[0].lstrip("./")).name:  # no file name: no image key (:func:`_key`)
            raise DatasetError(f"{path}:{lineno}: camera name {t[0]!r} is not an image name")
        try:
            vals = np.array([float(v) for v in t[1:9]])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: non-numeric camera values") from None
        if not np.all(np.isfinite(vals)) or np.linalg.norm(vals[1:5]) < 1e-8:
            raise DatasetError(f"{path}:{lineno}: non-finite camera values or zero quaternion")
        names.append(t[0])
        focal.append(vals[0])
        poses.append(pose_from_qvec_center(vals[1:5], vals[5:8]))
    if len(names) != n_cams:
        raise DatasetError(f"{path}:{lineno}: file ends after {len(names)} cameras, header announces {n_cams}")
    return NVMCameras(names, np.array(focal, dtype=np.float64), np.array(poses).reshape(-1, 3, 4)), lineno


def _bad_token_line(path: Path, chunk: list[tuple[int, list[str]]]) -> DatasetError:
    """The error naming the first line of ``chunk`` whose tokens are not all numbers."""
    for lineno, t in chunk:
        try:
            [float(v) for v in t]
        except ValueError:
            return DatasetError(f"{path}:{lineno}: malformed point line (non-numeric value)")
    return DatasetError(f"{path}:{chunk[0][0]}: malformed point line")  # not reached: the chunk had failed


def _parse_point_chunk(path: Path, chunk: list[tuple[int, list[str]]], n_cams: int) -> tuple[np.ndarray, ...]:
    """Point lines -> (xyz (p, 3), rgb (p, 3) uint8, n (p,) int64, image_idx (m,) int32, feature_idx (m,)
    int32, xy (m, 2)), checking each line's length, colour range and image indices."""
    lengths = np.empty(len(chunk), dtype=np.int64)
    used = []
    for i, (lineno, t) in enumerate(chunk):
        try:
            n = int(t[6])
        except (IndexError, ValueError):
            raise DatasetError(f"{path}:{lineno}: malformed point line (needs 'x y z r g b n ...')") from None
        if n < 0 or len(t) < 7 + 4 * n:
            raise DatasetError(f"{path}:{lineno}: malformed point line ({n} measurements announced, "
                               f"{max(len(t) - 7, 0) / 4:g} given)")
        lengths[i] = n
        used.append(t[: 7 + 4 * n] if len(t) > 7 + 4 * n else t)  # extra tokens are ignored
    try:
        flat = np.array(list(chain.from_iterable(used)), dtype=np.float64)
    except ValueError:
        raise _bad_token_line(path, chunk) from None
    del used
    starts = np.concatenate([[0], np.cumsum(7 + 4 * lengths)[:-1]])
    head = flat[starts[:, None] + np.arange(6)]
    rgb = np.trunc(head[:, 3:])  # the old reader's int(float(v))
    m = int(lengths.sum())
    obs_first = np.repeat(starts + 7 - 4 * (np.cumsum(lengths) - lengths), 4 * lengths)
    meas = flat[obs_first + np.arange(4 * m)].reshape(m, 4)
    img = np.trunc(meas[:, 0])
    feat = np.trunc(meas[:, 1])
    bad_rgb = ~((rgb >= 0) & (rgb <= 255)).all(axis=1)
    bad_img = ~((img >= 0) & (img < n_cams))
    bad_feat = ~((feat >= 0) & (feat < 2**31))
    if bad_rgb.any() or bad_img.any() or bad_feat.any():
        point_of_obs = np.repeat(np.arange(len(chunk)), lengths)
        candidates = [int(point_of_obs[np.argmax(b)]) for b in (bad_img, bad_feat) if b.any()]
        if bad_rgb.any():
            candidates.append(int(np.argmax(bad_rgb)))
        first = min(candidates)  # the first offending line of the chunk
        lineno = chunk[first][0]
        sel = point_of_obs == first
        if bad_rgb[first]:
            raise DatasetError(f"{path}:{lineno}: malformed point line (colour outside 0-255)")
        if bad_img[sel].any():
            raise DatasetError(f"{path}:{lineno}: point observed in unknown image index "
                               f"{meas[sel, 0][bad_img[sel]][0]:g}")
        raise DatasetError(f"{path}:{lineno}: malformed point line (feature index "
                           f"{meas[sel, 1][bad_feat[sel]][0]:g})")
    return (head[:, :3].copy(), rgb.astype(np.uint8), lengths, img.astype(np.int32), feat.astype(np.int32),
            meas[:, 2:].copy())


def read_nvm_arrays(path: str | Path, model: int | None = None) -> NVMModel:
    """Read one model of an NVM_V3 file into arrays, streaming the file in chunks of lines.

    Memory: the returned arrays (24 bytes per observation, 35 per point) plus one chunk of ``_CHUNK_LINES``
    lines as Python tokens; while the chunks are joined, one field's array exists twice. Compared with the
    reader before streaming, a negative track length and a colour outside 0-255 are errors (they were read
    as an empty track / crashed with OverflowError).

    Args:
        path: the ``.nvm`` file.
        model: which model (0-based); None: the file must hold one model.
    Returns:
        NVMModel: cameras, points and their flat tracks, in file order.
    Raises:
        DatasetError: missing file, not UTF-8 text, malformed header, camera or point line (a camera name
            without a file name, non-finite camera values or a zero quaternion included), a point observed in
            an unknown image, fewer cameras or points than the header announces (a truncated file), a file of
            several models with ``model=None`` or fewer models than ``model``; each names the file and the
            line.
    """
    path = Path(path)
    lines = _lines(path)
    cams, lineno = _parse_cameras(path, lines, model or 0)
    n_pts, lineno = _read_count(path, lines, "points", lineno)
    n_pts = n_pts or 0  # a file that ends after its cameras has no points
    parts = []
    read = 0
    while read < n_pts:
        chunk = [item for _, item in zip(range(min(_CHUNK_LINES, n_pts - read)), lines)]
        if not chunk:
            break
        parts.append(_parse_point_chunk(path, chunk, len(cams.names)))
        read += len(chunk)
        lineno = chunk[-1][0]
    if read != n_pts:
        raise DatasetError(f"{path}:{lineno}: file ends after {read} points, header announces {n_pts}")
    if model is None:  # the next line: end of file, the end-of-models 0, a PLY trailer, or another model
        nxt = next(lines, None)
        if nxt is not None and nxt[1][0].isdigit() and (_int_or_none(nxt[1][0]) or 0) > 0:  # "²": a digit, no int
            raise DatasetError(f"{path}:{nxt[0]}: the file holds more than one model (the next has {nxt[1][0]} "
                               "cameras): choose one with model=K (0 = the first)")
    lines.close()  # the models after the chosen one are not read
    if not parts:
        parts = [(np.empty((0, 3)), np.empty((0, 3), np.uint8), np.empty(0, np.int64), np.empty(0, np.int32),
                  np.empty(0, np.int32), np.empty((0, 2)))]
    parts = [list(p) for p in parts]
    arrays = []
    for k in range(6):  # join the chunks one field at a time, dropping that field's chunks once joined
        arrays.append(np.concatenate([p[k] for p in parts]))
        for p in parts:
            p[k] = None
    return NVMModel(cams, *arrays)


def _key(name: str) -> str:
    """``./overcast-reference/rear/123.png`` -> ``overcast-reference/rear/123``."""
    return str(Path(name.lstrip("./")).with_suffix(""))


def count_models(path: str | Path) -> int:
    """Number of models in an NVM_V3 file, from its counts alone: the camera and point lines are skipped unparsed
    (about 3 s per GB of text on one core).

    Raises:
        DatasetError: missing file, not UTF-8 text, not NVM_V3 (as :func:`read_nvm_arrays`).
    """
    path = Path(path)
    lines = (item for item in text_lines(path) if not item[1].isspace())
    first = next(lines, None)
    if first is None or first[1].split()[0] != "NVM_V3":
        raise DatasetError(f"{path}: not an NVM_V3 file (first line must be 'NVM_V3')")
    models = 0
    while True:
        counts = []
        for _ in range(2):  # cameras, then points
            item = next(lines, None)
            n = _int_or_none(item[1].split()[0]) if item is not None else None
            if not n or n < 0:
                break
            counts.append(n)
            for _ in zip(range(n), lines):
                pass
        if not counts:  # end of file, the end-of-models 0 or a trailer
            return models
        models += 1


def read_nvm_poses(path: str | Path, model: int | None = None) -> dict[str, np.ndarray]:
    """Camera poses of an NVM model; only the header and the camera block are parsed.

    Args:
        path: the ``.nvm`` file.
        model: which model (0-based); None: the file must hold one model, checked by :func:`count_models`
            (which skims the rest of the file), never silently the first of several.
    Returns:
        image key (``condition/camera/<ts>``, no extension) -> (3, 4) cam_from_world (world -> camera, world
        units of the model) of every camera of the model.
    Raises:
        DatasetError: missing file, not UTF-8 text, malformed header or camera line (as
            :func:`read_nvm_arrays`), fewer cameras than announced (names the file and the line), several models
            with ``model=None``.
    """
    path = Path(path)
    lines = _lines(path)
    cams, _ = _parse_cameras(path, lines, model or 0)
    lines.close()
    if model is None and (n := count_models(path)) > 1:
        raise DatasetError(f"{path}: the file holds {n} models: choose one with model=K (0 = the first)")
    return {_key(name): pose for name, pose in zip(cams.names, cams.cam_from_world)}


def read_nvm(path: str | Path, camera_of: Callable[[str], tuple[str, Camera]], model: int | None = None):
    """Read an NVM model into a ``pycolmap.Reconstruction`` with images, poses, points and tracks.

    Image ``i`` of the file gets image id ``i + 1``, point ``p`` gets point id ``p + 1``; an image's keypoints
    are its observations in file order.

    Args:
        path: the ``.nvm`` file.
        camera_of: image key -> (image name to use in the reconstruction, intrinsics). The NVM focal length is
            not used: the dataset's intrinsics are authoritative.
        model: which model of the file (:func:`read_nvm_arrays`).
    Returns:
        pycolmap.Reconstruction; 2D observations in COLMAP pixel convention, world units of the model.
    Raises:
        DatasetError: malformed file (names the line), point referencing an unknown camera.
    """
    import pycolmap

    model = read_nvm_arrays(path, model)
    cams = model.cameras
    rec = pycolmap.Reconstruction()
    cam_ids: dict[Camera, int] = {}
    images = []
    for name in cams.names:
        img_name, camera = camera_of(_key(name))
        if camera not in cam_ids:
            cid = len(cam_ids) + 1
            rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=cid, model=camera.model, width=camera.width,
                                                            height=camera.height, params=list(camera.params)))
            cam_ids[camera] = cid
        images.append((img_name, cam_ids[camera], camera.width, camera.height))
    n_cams = len(images)
    # an image's keypoints are its observations in file order: point2D index = rank within the image
    order = np.argsort(model.image_idx, kind="stable")
    per_image = np.bincount(model.image_idx, minlength=n_cams)
    first = np.cumsum(per_image) - per_image
    for i, (img_name, cid, w, h) in enumerate(images):
        keypoints = model.xy[order[first[i]:first[i] + per_image[i]]] + np.array([w / 2, h / 2])  # COLMAP pixels
        image = pycolmap.Image(name=img_name, keypoints=keypoints, camera_id=cid, image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(cams.cam_from_world[i]))
    point2D_idx = np.empty(len(order), dtype=np.int32)
    point2D_idx[order] = np.arange(len(order)) - np.repeat(first, per_image)
    del order
    image_id = model.image_idx
    track_start = model.track_start
    for p0 in range(0, len(model.xyz), _TRACK_CHUNK):  # plain lists per chunk: fast to iterate, bounded
        p1 = min(p0 + _TRACK_CHUNK, len(model.xyz))
        o0, o1 = (int(track_start[p0]), int(track_start[p1 - 1] + model.track_length[p1 - 1]))
        ids, idx = (image_id[o0:o1] + 1).tolist(), point2D_idx[o0:o1].tolist()
        ends = (track_start[p0:p1] + model.track_length[p0:p1] - o0).tolist()
        o = 0
        for p, end in zip(range(p0, p1), ends):
            tr = pycolmap.Track()
            for j in range(o, end):
                tr.add_element(ids[j], idx[j])
            o = end
            rec.add_point3D(model.xyz[p], tr, model.rgb[p])
    return rec
