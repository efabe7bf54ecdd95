"""Appearance conditions of the synthetic dataset (``CONDITIONS``: reference, dusk, autumn, sun, snow, night):
the shading parameters per condition, the season variants of the textures (snow cover, autumn foliage and
leaves, sun shadows on the ground), texture sampling with mip-mapping, and :func:`render_view`, which shades
one image under a condition (sun, street lamps, headlights, lit windows, sky, fog, lamp glows, flakes, blur,
sensor noise, vignetting); the per-frame generators of those effects.
"""
from __future__ import annotations

import cv2
import numpy as np

from .camera import SynthCamera
from .render import render_geometry
from .scene import Face, Scene, _mips
from .textures import _noise, _rand_color

CONDITIONS = ("reference", "dusk", "autumn", "sun", "snow", "night")


_COND = {
    # ambient, sun strength, sun direction (towards the sun), tint (BGR), sky (zenith BGR, horizon BGR),
    # cloud strength, fog distance (m, 0 = none), lamp power, headlight power, window-lit fraction,
    # window emission, noise std, blur sigma px, saturation, gamma, flakes
    "reference": dict(amb=0.78, sun=0.3, sdir=(0.3, -0.5, 0.8), tint=(1.0, 1.0, 1.0), zen=(0.85, 0.75, 0.65),
                      hor=(0.92, 0.9, 0.88), clouds=0.25, fog=0.0, lamp=0.0, head=0.0, lit=0.0, emis=0.0,
                      noise=0.008, blur=0.0, sat=1.0, gamma=1.0, flakes=0),
    "dusk": dict(amb=0.30, sun=0.12, sdir=(-0.8, 0.3, 0.15), tint=(0.75, 0.9, 1.15), zen=(0.45, 0.25, 0.2),
                 hor=(0.35, 0.55, 0.95), clouds=0.15, fog=0.0, lamp=6.0, head=0.0, lit=0.2, emis=0.5,
                 noise=0.015, blur=0.0, sat=0.85, gamma=1.15, flakes=0),
    "autumn": dict(amb=0.55, sun=0.6, sdir=(-0.75, -0.2, 0.6), tint=(0.8, 0.97, 1.12), zen=(0.9, 0.6, 0.35),
                   hor=(0.95, 0.85, 0.75), clouds=0.3, fog=0.0, lamp=0.0, head=0.0, lit=0.0, emis=0.0,
                   noise=0.008, blur=0.0, sat=1.2, gamma=0.95, flakes=0),
    "sun": dict(amb=0.45, sun=0.85, sdir=(0.5, 0.35, 0.75), tint=(0.95, 1.0, 1.05), zen=(0.95, 0.55, 0.25),
                hor=(0.98, 0.85, 0.7), clouds=0.1, fog=0.0, lamp=0.0, head=0.0, lit=0.0, emis=0.0,
                noise=0.006, blur=0.0, sat=1.3, gamma=0.9, flakes=0),
    "snow": dict(amb=0.85, sun=0.1, sdir=(0.3, -0.5, 0.8), tint=(1.08, 1.0, 0.95), zen=(0.82, 0.82, 0.8),
                 hor=(0.9, 0.9, 0.9), clouds=0.05, fog=45.0, lamp=0.0, head=0.0, lit=0.0, emis=0.0,
                 noise=0.012, blur=0.9, sat=0.6, gamma=1.0, flakes=1400),
    "night": dict(amb=0.02, sun=0.0, sdir=(0, 0, 1), tint=(1.0, 1.0, 1.0), zen=(0.05, 0.02, 0.01),
                  hor=(0.12, 0.15, 0.2), clouds=0.0, fog=0.0, lamp=28.0, head=30.0, lit=0.35, emis=1.0,
                  noise=0.04, blur=0.6, sat=0.9, gamma=1.0, flakes=0),
}
_LAMP_BGR = np.array([0.45, 0.75, 1.0], np.float32)  # sodium-like street lamps
_WARM_BGR = np.array([0.35, 0.7, 1.0], np.float32)  # lit windows


def _face_variant(scene: Scene, fi: int, cond: str) -> list:
    """Albedo mip pyramid of face ``fi`` under ``cond`` (snow-covered ground, autumn foliage...)."""
    f = scene.faces[fi]
    if cond not in ("snow", "autumn", "sun") or f.kind not in ("ground", "veg", "veg_top"):
        return f.mips
    if cond == "sun" and f.kind != "ground":
        return f.mips
    key = (fi, cond)
    if key in scene._variants:
        return scene._variants[key]
    rng = np.random.default_rng([scene.seed, fi, CONDITIONS.index(cond), 7])
    tex = f.mips[0].astype(np.float32) / 255
    h, w = tex.shape[:2]
    if cond == "snow":
        snow_c = np.array([0.97, 0.95, 0.93], np.float32)
        if f.kind == "ground":
            ys = f.bounds[1][1] - (np.arange(h, dtype=np.float32) + 0.5) / f.rho  # world y of each row
            cover = np.clip(0.9 + 0.25 * _noise((h, w), rng, w / (2 * f.rho)), 0, 1)
            road = (np.abs(ys) < scene.road_half_width_m)[:, None]
            # tyre tracks in both lanes: darker wet asphalt
            tr = np.zeros(h, np.float32)
            for c in np.array([-0.7, -0.3, 0.3, 0.7]) * scene.road_half_width_m:  # wheel tracks of both lanes
                tr = np.maximum(tr, np.exp(-((ys - c) / 0.3) ** 2))
            track = tr[:, None] * (0.7 + 0.3 * _noise((h, w), rng, w / (3 * f.rho)))
            cover = np.where(road, np.clip(cover - 1.1 * track, 0, 1), cover)
            snow = snow_c * (1 + 0.04 * rng.standard_normal((h, w, 1), dtype=np.float32))
            wet = tex * 0.55
            out = wet * (1 - cover[..., None]) + snow * cover[..., None]
            for _ in range(int(w * h / 4000)):  # footprints and slush lumps
                cv2.ellipse(out, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), (int(rng.integers(3, 8)), int(rng.integers(2, 4))),
                            float(rng.uniform(0, 180)), 0, 360, (0.7, 0.7, 0.72), -1, cv2.LINE_AA)
        else:
            frac = 0.95 if f.kind == "veg_top" else 0.35
            cover = (_noise((h, w), rng, max(h, w) / 4) * 0.5 + 0.5 < frac).astype(np.float32)
            cover = cv2.GaussianBlur(cover, (0, 0), 1.5)[..., None]
            out = tex * (1 - cover) + snow_c * cover
    elif cond == "sun":  # ground only: shadows below
        out = tex.copy()
    else:  # autumn
        if f.kind == "ground":
            out = tex.copy()
            for _ in range(int(w * h / 300)):  # fallen leaves
                c = _rand_color(rng, rng.choice([[0.1, 0.45, 0.8], [0.05, 0.25, 0.6], [0.1, 0.3, 0.45]]), 0.08)
                cv2.ellipse(out, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), (int(rng.integers(2, 6)), int(rng.integers(1, 4))),
                            float(rng.uniform(0, 180)), 0, 360, c, -1, cv2.LINE_AA)
        else:
            lum = tex.mean(axis=2, keepdims=True) / max(float(tex.mean()), 1e-3)
            field_ = _noise((h, w), rng, max(h, w) / 6)[..., None] * 0.5 + 0.5
            orange, red = np.array([0.1, 0.45, 0.9], np.float32), np.array([0.08, 0.15, 0.7], np.float32)
            out = (orange * (1 - field_) + red * field_) * lum * 0.6
    p = _COND[cond]
    if f.kind == "ground" and p["sun"] >= 0.4:
        out = out * _ground_shadow(scene, f, np.array(p["sdir"], np.float64), p["amb"], p["sun"], h, w)[..., None]
    out = (np.clip(out, 0, 1) * 255).astype(np.uint8)
    scene._variants[key] = _mips(out)
    return scene._variants[key]


def _ground_shadow(scene: Scene, f: Face, sdir: np.ndarray, amb: float, sun: float, h: int, w: int) -> np.ndarray:
    """(h, w) float32 albedo factor of a ground face: amb / (amb + sun * s_z) where a caster blocks the sun.

    The shadow of each caster box is the convex hull of its corners projected along the sun direction onto
    z = 0, rasterised in the face's texel grid (so the shading of the ground matches the 3D scene)."""
    s = sdir / np.linalg.norm(sdir)
    x0, y1 = f.bounds[0][0], f.bounds[1][1]
    mask = np.zeros((h, w), np.uint8)
    for lo, hi in scene.casters:
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        g = corners[:, :2] - (corners[:, 2:] / s[2]) * s[:2]  # shadow points on z = 0
        tex = np.stack([(g[:, 0] - x0) * f.rho - 0.5, (y1 - g[:, 1]) * f.rho - 0.5], 1)
        if tex[:, 0].max() < 0 or tex[:, 0].min() > w or tex[:, 1].max() < 0 or tex[:, 1].min() > h:
            continue
        hull = cv2.convexHull(np.round(tex * 16).astype(np.int32))
        cv2.fillPoly(mask, [hull], 255, cv2.LINE_AA, shift=4)
    m = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 1.5)
    k = amb / (amb + sun * max(s[2], 0.0))
    return 1 - (1 - k) * m


def _sample_faces(scene: Scene, geo: dict, cam: SynthCamera, cond: str, need_glass: bool):
    """Albedo (H, W, 3) float32, labels (H, W) uint8 and glass ids (H, W) uint8 of the visible faces."""
    H, W = cam.height, cam.width
    albedo = np.zeros((H, W, 3), np.float32)
    labels = np.zeros((H, W), np.uint8)
    glass = np.zeros((H, W), np.uint8)
    rays_norm = cam.ray_norm
    f_mean = 0.5 * (cam.fx + cam.fy)
    for i, (v0, v1, u0, u1) in geo["windows"].items():
        f = scene.faces[i]
        m = geo["face"][v0:v1, u0:u1] == i
        if not m.any():
            continue
        u = geo["u_m"][v0:v1, u0:u1] * f.rho - 0.5
        v = geo["v_m"][v0:v1, u0:u1] * f.rho - 0.5
        dist = geo["depth"][v0:v1, u0:u1] * rays_norm[v0:v1, u0:u1]
        cos = np.abs(geo["dirs"][v0:v1, u0:u1, f.axis]) / rays_norm[v0:v1, u0:u1]
        with np.errstate(divide="ignore", invalid="ignore"):
            texels = dist / (f_mean * np.maximum(cos, 0.05)) * f.rho
        mips = _face_variant(scene, i, cond)
        lod = np.clip(np.log2(np.maximum(np.where(m, texels, 1.0), 1.0)) - 0.3, 0, len(mips) - 1)
        acc = np.zeros(m.shape + (3,), np.float32)
        lmin, lmax = int(np.floor(lod[m].min())), int(np.ceil(lod[m].max()))
        for L in range(lmin, lmax + 1):
            wgt = np.clip(1 - np.abs(lod - L), 0, 1)
            if not (wgt[m] > 0).any():
                continue
            s = 0.5 ** L
            mx = ((u + 0.5) * s - 0.5).astype(np.float32)
            my = ((v + 0.5) * s - 0.5).astype(np.float32)
            smp = cv2.remap(mips[L], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            acc += smp.astype(np.float32) * wgt[..., None]
        albedo[v0:v1, u0:u1][m] = acc[m] / 255
        mx, my = np.round(u).astype(np.float32), np.round(v).astype(np.float32)
        labels[v0:v1, u0:u1][m] = cv2.remap(f.labels, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)[m]
        if need_glass and f.glass is not None:
            glass[v0:v1, u0:u1][m] = cv2.remap(f.glass, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)[m]
    return albedo, labels, glass


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray, width: int = 1024) -> np.ndarray:
    """Bilinear samples (N,) of ``image`` at float pixel coordinates (N,) ``x``, ``y`` (cv2.remap, border
    reflected). The N points are laid out in rows of ``width``: remap's output must be under 32,767 pixels on
    each side."""
    n = len(x)
    pad = (-n) % width
    grid = [np.pad(v, (0, pad)).reshape(-1, width) for v in (x, y)]
    return cv2.remap(image, *grid, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101).ravel()[:n]


def render_view(scene: Scene, cam: SynthCamera, cam_from_world: np.ndarray, cond: str = "reference",
                rng: np.random.Generator | None = None) -> dict:
    """Render one image of the scene under a condition.

    Args:
        scene: the scene. cam: intrinsics (the image is rendered with its distortion).
        cam_from_world: (3, 4) world -> camera, metres.
        cond: one of ``CONDITIONS``.
        rng: generator of the per-frame effects (sensor noise, flakes, exposure); default seeded from 0.
    Returns:
        dict with ``image`` (H, W, 3) uint8 BGR, ``labels`` (H, W) uint8 class ids (``CLASSES``), ``depth``
        (H, W) float64 z-depth in metres (inf for sky), ``face`` (H, W) int32 face index (-1 = sky).
    Raises:
        ValueError: unknown condition or bad pose shape.
    """
    if cond not in _COND:
        raise ValueError(f"Unknown condition {cond!r}; choose from {CONDITIONS}")
    p = _COND[cond]
    rng = np.random.default_rng(0) if rng is None else rng
    geo = render_geometry(scene, cam, cam_from_world)
    albedo, labels, glass = _sample_faces(scene, geo, cam, cond, need_glass=p["lit"] > 0)
    H, W = cam.height, cam.width
    hit = geo["face"] >= 0
    depth = geo["depth"]
    C = geo["center"]
    dirs = geo["dirs"]
    normals = np.zeros((len(scene.faces) + 1, 3), np.float32)
    normals[:-1] = np.array([f.normal for f in scene.faces]) if scene.faces else 0
    nrm = normals[geo["face"]]  # -1 -> last row (zeros) for sky
    # direct light: ambient + directional sun
    sdir = np.array(p["sdir"], np.float32)
    sdir /= np.linalg.norm(sdir)
    light = p["amb"] + p["sun"] * np.clip(nrm @ sdir, 0, None)
    light = light[..., None] * np.array(p["tint"], np.float32)
    col = albedo * light
    if p["lamp"] > 0 or p["head"] > 0:
        X = C + np.where(hit, depth, 0)[..., None] * dirs  # world points (H, W, 3)
        extra = np.zeros((H, W, 3), np.float32)
        near = scene.lamps[np.linalg.norm(scene.lamps[:, :2] - C[:2], axis=1) < 60] if len(scene.lamps) else []
        for P in near:
            v = (P - X).astype(np.float32)
            d2 = (v * v).sum(-1) + 0.5
            cosl = np.clip((v * nrm).sum(-1) / np.sqrt(d2), 0, None) * (X[..., 2] < P[2] - 0.05)
            extra += (p["lamp"] * cosl / d2)[..., None] * _LAMP_BGR
        if p["head"] > 0:  # headlights: a forward cone from just below the camera
            fwd = dirs[H // 2, W // 2] / np.linalg.norm(dirs[H // 2, W // 2])
            fwd = np.array([fwd[0], fwd[1], 0.0]) / max(np.linalg.norm(fwd[:2]), 1e-6)
            Ph = C - np.array([0, 0, 1.0])
            v = (X - Ph).astype(np.float32)
            dist2 = (v * v).sum(-1) + 1.0
            vn = v / np.sqrt(dist2)[..., None]
            cone = np.clip(vn @ fwd.astype(np.float32), 0, None) ** 6
            cosl = np.clip(-(vn * nrm).sum(-1), 0, None)
            extra += (p["head"] * cone * cosl / dist2)[..., None] * np.array([0.9, 0.95, 1.0], np.float32)
        col += albedo * extra * hit[..., None]
    if p["lit"] > 0:  # lit windows (a fixed random subset per scene)
        lut_rng = np.random.default_rng([scene.seed, 55, CONDITIONS.index(cond)])
        lut = (lut_rng.random(256) < p["lit"]).astype(np.float32) * lut_rng.uniform(0.6, 1.2, 256).astype(np.float32)
        lut[0] = 0
        e = lut[glass][..., None] * p["emis"] * (_WARM_BGR * (0.5 + 1.5 * albedo))
        col += e
    # sky (only where no face was hit)
    sky_px = ~hit
    if sky_px.any():
        dn = dirs[sky_px] / (cam.ray_norm[sky_px])[:, None]  # (S, 3) unit directions
        el = np.arcsin(np.clip(dn[:, 2], -1, 1))
        az = np.arctan2(dn[:, 1], dn[:, 0])
        Hs, Ws = scene.sky.shape
        my = ((1 - np.clip(el, 0, None) / (np.pi / 2)) * (Hs - 1)).astype(np.float32)
        mx = ((az + np.pi) / (2 * np.pi) * (Ws - 1)).astype(np.float32)
        clouds = _sample(scene.sky, mx, my)
        tgrad = np.clip(el / 0.8, 0, 1)[:, None].astype(np.float32)
        sky = np.array(p["hor"], np.float32) * (1 - tgrad) + np.array(p["zen"], np.float32) * tgrad
        cl = np.clip((clouds - 0.45) * 2.5, 0, 1)[:, None] * p["clouds"]
        col[sky_px] = sky * (1 - cl) + cl * np.float32(min(1.0, p["amb"] + 0.2))
    if p["fog"] > 0:
        dist = np.where(hit, depth * cam.ray_norm, 1e4)
        fa = np.exp(-dist / p["fog"]).astype(np.float32)[..., None]
        col = col * fa + np.array(p["hor"], np.float32) * (1 - fa)
    # lamp glows (night/dusk): halos around visible lamp heads
    if p["lamp"] > 0 and len(scene.lamps):
        T = np.asarray(cam_from_world, np.float64)
        pc = scene.lamps @ T[:, :3].T + T[:, 3]
        uv, ok = cam.project(pc)
        glow = np.zeros((H, W), np.float32)
        for (u, v), z, good in zip(uv, pc[:, 2], ok):
            if not good or not (-40 < u < W + 40 and -40 < v < H + 40):
                continue
            ui, vi = int(np.clip(round(u), 0, W - 1)), int(np.clip(round(v), 0, H - 1))
            if 0 <= u < W and 0 <= v < H and depth[vi, ui] < z - 0.5:
                continue  # occluded
            r = 0.35 * cam.fx / z
            ext = int(min(max(W, H), 20 * r)) + 2  # the halo is negligible beyond ~20 r
            v0, v1, u0, u1 = max(0, int(v) - ext), min(H, int(v) + ext), max(0, int(u) - ext), min(W, int(u) + ext)
            if v0 >= v1 or u0 >= u1:
                continue
            yy, xx = np.mgrid[v0:v1, u0:u1].astype(np.float32)
            d2 = (xx - u) ** 2 + (yy - v) ** 2
            glow[v0:v1, u0:u1] += np.exp(-d2 / (2 * r * r)) * 1.2 + 0.5 * np.exp(-np.sqrt(d2) / (3 * r))
        col += glow[..., None] * _LAMP_BGR * (p["lamp"] / 28.0)
    # camera: exposure jitter, saturation, gamma, blur, flakes, noise, vignetting
    col *= np.float32(rng.uniform(0.95, 1.05))
    grey = col.mean(axis=2, keepdims=True)
    col = grey + (col - grey) * p["sat"]
    col = np.clip(col, 0, None) ** (1 / p["gamma"])
    if p["flakes"] > 0:
        n = int(p["flakes"] * rng.uniform(0.8, 1.2))
        layer = np.zeros((H, W), np.float32)
        xs, ys = rng.uniform(0, W, n), rng.uniform(0, H, n)
        size = rng.pareto(3.0, n) + 0.6
        for x, y, s in zip(xs, ys, size):
            ln = s * rng.uniform(1.0, 3.0)
            cv2.line(layer, (int(x), int(y)), (int(x + 0.3 * ln), int(y + ln)), float(rng.uniform(0.5, 1.0)),
                     max(1, int(s)), cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer, (0, 0), 0.8)
        col = col * (1 - layer[..., None] * 0.85) + layer[..., None] * 0.95
    if p["blur"] > 0:
        col = cv2.GaussianBlur(col, (0, 0), p["blur"])
    col *= cam.vignette
    if p["noise"] > 0:
        col += rng.normal(0, p["noise"], size=(H, W, 1)).astype(np.float32)
        col += rng.normal(0, p["noise"] * 0.5, size=(H, W, 3)).astype(np.float32)
    img = (np.clip(col, 0, 1) * 255 + 0.5).astype(np.uint8)
    labels[~hit] = 0
    if cond == "snow":  # road markings are under the snow
        labels[labels == 8] = 1
    return dict(image=img, labels=labels, depth=depth, face=geo["face"])


def _frame_rng(seed: int, slice_id: int, cond: str, k: int, purpose: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, slice_id, CONDITIONS.index(cond), k, purpose])
