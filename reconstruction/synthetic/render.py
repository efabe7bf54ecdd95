"""Geometry pass of the renderer: per-pixel ray casting of the scene's axis-aligned faces (near-plane clipping,
screen-space windows per face), giving depth, face index and metric texture coordinates of every pixel.
"""
from __future__ import annotations

import numpy as np

from .camera import _NEAR, SynthCamera
from .scene import Face, Scene

def _clip_near(pts: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon (camera frame, (N, 3)) against z >= _NEAR."""
    out = []
    n = len(pts)
    for k in range(n):
        a, b = pts[k], pts[(k + 1) % n]
        ina, inb = a[2] >= _NEAR, b[2] >= _NEAR
        if ina:
            out.append(a)
        if ina != inb:
            s = (_NEAR - a[2]) / (b[2] - a[2])
            out.append(a + s * (b - a))
    return np.array(out).reshape(-1, 3)


def _face_window(face: Face, R, t, cam: SynthCamera, fov) -> tuple | None:
    """Pixel window (v0, v1, u0, u1) that contains the face's image, or None when it is not visible."""
    pc = _clip_near(face.corners() @ R.T + t)
    if len(pc) < 3:
        return None
    xn, yn = pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2]
    x0, x1 = max(xn.min(), fov[0]), min(xn.max(), fov[1])
    y0, y1 = max(yn.min(), fov[2]), min(yn.max(), fov[3])
    if x0 >= x1 or y0 >= y1:
        return None
    s = np.linspace(0, 1, 17)
    bx = np.concatenate([x0 + (x1 - x0) * s, np.full(17, x1), x1 - (x1 - x0) * s, np.full(17, x0)])
    by = np.concatenate([np.full(17, y0), y0 + (y1 - y0) * s, np.full(17, y1), y1 - (y1 - y0) * s])
    xd, yd = cam.distort(bx, by)
    u, v = cam.fx * xd + cam.cx, cam.fy * yd + cam.cy
    u0, u1 = max(0, int(np.floor(u.min())) - 2), min(cam.width, int(np.ceil(u.max())) + 3)
    v0, v1 = max(0, int(np.floor(v.min())) - 2), min(cam.height, int(np.ceil(v.max())) + 3)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def render_geometry(scene: Scene, cam: SynthCamera, cam_from_world: np.ndarray, max_distance_m: float = 250.0) -> dict:
    """Ray-cast the scene (per pixel, nearest axis-aligned face).

    Args:
        scene: the scene. cam: intrinsics. cam_from_world: (3, 4) world -> camera, metres.
        max_distance_m: faces farther than this from the camera are not drawn, metres.
    Returns:
        dict with ``depth`` (H, W) float64 z-depth in the camera frame, metres (inf = sky); ``face`` (H, W)
        int32 face index (-1 = sky); ``u_m``/``v_m`` (H, W) float32 metric texture coordinates on that face;
        ``windows`` {face index: (v0, v1, u0, u1)}; ``dirs`` (H, W, 3) world ray directions (camera z = 1);
        ``center`` (3,) camera centre.
    """
    T = np.asarray(cam_from_world, dtype=np.float64)
    if T.shape != (3, 4):
        raise ValueError(f"cam_from_world must be (3, 4), got {T.shape}")
    R, t = T[:, :3], T[:, 3]
    C = -R.T @ t
    rays = cam.rays()
    fov = (rays[..., 0].min(), rays[..., 0].max(), rays[..., 1].min(), rays[..., 1].max())
    dirs = rays @ R  # world directions, (H, W, 3)
    d = [np.ascontiguousarray(dirs[..., k]) for k in range(3)]
    H, W = cam.height, cam.width
    depth = np.full((H, W), np.inf)
    fid = np.full((H, W), -1, np.int32)
    um = np.zeros((H, W), np.float32)
    vm = np.zeros((H, W), np.float32)
    windows = {}
    lo, hi = scene.face_boxes[:, 0], scene.face_boxes[:, 1]
    near = np.linalg.norm(np.clip(C, lo, hi) - C, axis=1) < max_distance_m  # distance culling
    for i in np.nonzero(near)[0]:
        f = scene.faces[i]
        a = f.axis
        if f.sign * (C[a] - f.plane) <= 1e-9:  # back-facing
            continue
        win = _face_window(f, R, t, cam, fov)
        if win is None:
            continue
        v0, v1, u0, u1 = win
        da = d[a][v0:v1, u0:u1]
        with np.errstate(divide="ignore", invalid="ignore"):
            tt = (f.plane - C[a]) / da
        dep = depth[v0:v1, u0:u1]
        ok = (tt > _NEAR) & (tt < dep)
        coords = {}
        for k, (lo, hi) in f.bounds.items():
            pk = C[k] + tt * d[k][v0:v1, u0:u1]
            ok &= (pk >= lo) & (pk <= hi)
            coords[k] = pk
        if not ok.any():
            continue
        windows[i] = win
        dep[ok] = tt[ok]
        fid[v0:v1, u0:u1][ok] = i
        um[v0:v1, u0:u1][ok] = (f.u_sign * (coords[f.u_axis] - f.u_origin))[ok]
        vm[v0:v1, u0:u1][ok] = (f.v_sign * (coords[f.v_axis] - f.v_origin))[ok]
    tight = {}
    for i, (v0, v1, u0, u1) in windows.items():  # shrink each window to the face's final pixels
        m = fid[v0:v1, u0:u1] == i
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        if len(rows):
            tight[i] = (v0 + rows[0], v0 + rows[-1] + 1, u0 + cols[0], u0 + cols[-1] + 1)
    return dict(depth=depth, face=fid, u_m=um, v_m=vm, windows=tight, dirs=dirs, center=C)
