"""Scene of the synthetic street: textured axis-aligned faces (:class:`Face`), the :class:`Scene` container,
the ground tiles (road, curb, sidewalk slabs, markings) and :func:`build_scene`, which generates the buildings,
trees, lamps, ground and sky panorama of one slice from a seed; the semantic class ids ``CLASSES``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .textures import _facade_texture, _fractal, _plain_texture, _put_text_box, _rand_color

CLASSES = {0: "sky", 1: "road", 2: "sidewalk", 3: "wall", 4: "window", 5: "door", 6: "vegetation",
           7: "sign/poster", 8: "road marking", 9: "pole/trunk"}


@dataclass
class Face:
    """An axis-aligned textured rectangle.

    Attributes:
        axis: index of the normal axis (0 x, 1 y, 2 z); ``sign``: +1/-1, the outward normal is sign * e_axis.
        plane: the face's coordinate along ``axis``, metres.
        bounds: {other axis: (lo, hi)} metres.
        u_axis, u_sign, u_origin / v_axis, v_sign, v_origin: texture coordinates in metres,
            u_m = u_sign * (p[u_axis] - u_origin) (likewise v), both in [0, size].
        rho: texels per metre. mips: albedo pyramid, (H, W, 3) uint8 BGR per level.
        labels: (H, W) uint8 class ids; glass: (H, W) uint8 window ids (0 = none) or None.
        kind: "ground", "facade", "wall", "veg", "veg_top", "pole", "lamp".
    """

    axis: int
    sign: int
    plane: float
    bounds: dict
    u_axis: int
    u_sign: int
    u_origin: float
    v_axis: int
    v_sign: int
    v_origin: float
    rho: float
    tex_fn: Any = field(repr=False)
    seed: int
    kind: str
    _tex: tuple | None = field(default=None, repr=False)

    def _textures(self) -> tuple:
        if self._tex is None:  # generated on first use, from the face's own seed (order independent)
            (ulo, uhi), (vlo, vhi) = self.bounds[self.u_axis], self.bounds[self.v_axis]
            tex, lab, glass = self.tex_fn(uhi - ulo, vhi - vlo, np.random.default_rng(self.seed))
            self._tex = (_mips(tex), lab, glass)
        return self._tex

    @property
    def mips(self) -> list:
        return self._textures()[0]

    @property
    def labels(self) -> np.ndarray:
        return self._textures()[1]

    @property
    def glass(self) -> np.ndarray | None:
        return self._textures()[2]

    @property
    def normal(self) -> np.ndarray:
        n = np.zeros(3)
        n[self.axis] = self.sign
        return n

    def corners(self) -> np.ndarray:
        (a, (alo, ahi)), (b, (blo, bhi)) = sorted(self.bounds.items())
        out = np.zeros((4, 3))
        out[:, self.axis] = self.plane
        out[:, a] = [alo, ahi, ahi, alo]
        out[:, b] = [blo, blo, bhi, bhi]
        return out


def _mips(tex: np.ndarray, levels: int = 5) -> list:
    out = [tex]
    while len(out) < levels and min(out[-1].shape[:2]) >= 16:
        out.append(cv2.pyrDown(out[-1]))
    return out


def _make_face(axis, sign, plane, bounds, rho, tex_fn, kind, rng) -> Face:
    """Build a face; the texture is oriented so that it reads correctly from outside (v down = -z)."""
    n = np.zeros(3)
    n[axis] = sign
    others = [k for k in range(3) if k != axis]
    if axis == 2:  # horizontal: u along +x, v along -y
        u_axis, u_sign, v_axis, v_sign = 0, 1, 1, -1
    else:
        r = np.cross(-n, [0, 0, 1.0])
        u_axis = int(np.argmax(np.abs(r)))
        u_sign = int(np.sign(r[u_axis]))
        v_axis, v_sign = 2, -1
    assert set([u_axis, v_axis]) == set(others)
    (ulo, uhi), (vlo, vhi) = bounds[u_axis], bounds[v_axis]
    u_origin = ulo if u_sign > 0 else uhi
    v_origin = vlo if v_sign > 0 else vhi
    return Face(axis, sign, float(plane), {k: (float(bounds[k][0]), float(bounds[k][1])) for k in others},
                u_axis, u_sign, float(u_origin), v_axis, v_sign, float(v_origin), float(rho), tex_fn,
                int(rng.integers(1 << 62)), kind)


def _box_faces(lo, hi, rho, tex_fns: dict, kind_of: dict, rng, skip=()) -> list:
    """Faces of the box [lo, hi] (3-vectors); ``tex_fns[(axis, sign)]`` makes each face's texture."""
    faces = []
    for axis in range(3):
        for sign in (-1, 1):
            if (axis, sign) in skip:
                continue
            bounds = {k: (lo[k], hi[k]) for k in range(3) if k != axis}
            plane = hi[axis] if sign > 0 else lo[axis]
            fn = tex_fns.get((axis, sign), tex_fns.get("default"))
            faces.append(_make_face(axis, sign, plane, bounds, rho[(axis, sign)] if isinstance(rho, dict) else rho,
                                    fn, kind_of.get((axis, sign), kind_of.get("default")), rng))
    return faces


@dataclass
class Scene:
    """A generated street: faces, lights and a sky panorama (see the module docstring).

    Attributes:
        faces: textured axis-aligned rectangles.
        lamps: (L, 3) street-lamp light positions, metres.
        sky: (Hs, Ws) float32 cloud field over (elevation 90..0 deg, azimuth -180..180 deg).
        x_range: (x_min, x_max) of the street, metres. half_width: half the distance between building backs.
        seed: the slice's seed (condition effects derive their generators from it).
        building_fronts: (side, x0, x1, y_front, height) per street-side building, metres (side +1: y > 0).
        road_half_width_m: half the road width, metres.
        casters: (K, 2, 3) boxes (min, max corner) that cast sun shadows on the ground, metres.
    """

    faces: list
    lamps: np.ndarray
    sky: np.ndarray
    x_range: tuple
    half_width: float
    seed: int
    building_fronts: list = field(default_factory=list)
    road_half_width_m: float = 4.0
    casters: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3)))
    _variants: dict = field(default_factory=dict, repr=False)
    _boxes: np.ndarray | None = field(default=None, repr=False)

    @property
    def face_boxes(self) -> np.ndarray:
        """(F, 2, 3) axis-aligned bounds (min, max corner) of the faces, metres."""
        if self._boxes is None:
            self._boxes = np.array([[f.corners().min(0), f.corners().max(0)] for f in self.faces]).reshape(-1, 2, 3)
        return self._boxes


def _ground_tile(x0, x1, y_half, rho, sc, objs, coarse, rng):
    """Ground texture for x in [x0, x1], y in [-y_half, y_half]: road, curb, sidewalks, markings."""
    w, h = int(round((x1 - x0) * rho)), int(round(2 * y_half * rho))
    # texel (col, row) centre -> metric (x, y); v axis = -y
    xs = x0 + (np.arange(w, dtype=np.float32) + 0.5) / rho  # (w,)
    ys = y_half - (np.arange(h, dtype=np.float32) + 0.5) / rho  # (h,)
    ay = np.abs(ys)
    half_road = sc.road_width_m / 2
    # seamless large-scale noise from global coarse grids
    hq, wq = (h + 3) // 4, (w + 3) // 4  # smooth: evaluate at 1/4 resolution, then upsample
    xq, yq = xs[::4][:wq], ys[::4][:hq]
    g_noise = np.zeros((hq, wq), np.float32)
    for grid, cell, gx0 in coarse:
        mx = np.broadcast_to(((xq - gx0) / cell)[None, :], (hq, wq)).astype(np.float32)
        my = np.broadcast_to(((yq + y_half) / cell)[:, None], (hq, wq)).astype(np.float32)
        g_noise += cv2.remap(grid, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    g_noise = cv2.resize(g_noise, (wq * 4, hq * 4), interpolation=cv2.INTER_LINEAR)[:h, :w]
    road = (ay < half_road)[:, None]  # (h, 1)
    curb = ((ay >= half_road) & (ay < half_road + 0.18))[:, None]
    lab = np.ascontiguousarray(np.broadcast_to(np.where(road, 1, 2).astype(np.uint8), (h, w)))
    grain = 0.05 * rng.standard_normal((h, w), dtype=np.float32)
    # asphalt
    asph = 0.32 + 0.06 * g_noise + grain
    asph += 0.18 * (rng.random((h, w), dtype=np.float32) > 0.985)  # aggregate
    # sidewalk slabs, 0.5 m, rows offset, per-slab shade from a hash of the global slab index
    slab = 0.5
    rows = np.floor((ay - half_road) / slab).astype(np.int64)  # (h,)
    row_off = ((rows * 0.618) % 1.0 * slab).astype(np.float32)
    xo = xs[None, :] + row_off[:, None] + 1000.0  # (h, w)
    cols = (xo // slab).astype(np.int64)
    hsh = ((rows[:, None] * 73856093) ^ (cols * 19349663) ^ (np.where(ys > 0, 1, 2)[:, None] * 83492791)) % 1000003
    side = (0.40 + 0.3 * (hsh % 1000).astype(np.float32) / 1000.0) + 0.04 * g_noise + grain
    gap = ((xo % slab) < 0.03 * slab) | (((ay - half_road) % slab) < 0.03 * slab)[:, None]
    side[gap] = 0.3
    grey = np.where(road, asph, side)
    grey = np.where(curb, 0.7 + 0.8 * grain, grey)
    tint = np.where(road, np.array([1.0, 1.0, 0.98], np.float32), np.array([0.92, 0.97, 1.02], np.float32))  # (h, 3)
    img = grey[..., None] * tint[:, None, :]

    def px(x, y):  # metres -> texel coordinates (int) in this tile
        return int(round((x - x0) * rho)), int(round((y_half - y) * rho))

    for o in objs:  # global object list, clipped by OpenCV at the tile border
        t = o["type"]
        if t == "dash":
            cv2.rectangle(img, px(o["x0"], o["y0"]), px(o["x1"], o["y1"]), (0.85, 0.88, 0.9), -1)
            cv2.rectangle(lab, px(o["x0"], o["y0"]), px(o["x1"], o["y1"]), 8, -1)
        elif t == "text":
            p0, p1 = px(o["x0"], o["y0"]), px(o["x1"], o["y1"])
            sub_img = np.zeros((abs(p1[1] - p0[1]) + 1, abs(p1[0] - p0[0]) + 1, 3), np.float32)
            _put_text_box(sub_img, o["text"], 0, 0, sub_img.shape[1], sub_img.shape[0], (1, 1, 1), np.random.default_rng(o["seed"]))
            m = sub_img[..., 0] > 0.5
            ya, xa = min(p0[1], p1[1]), min(p0[0], p1[0])
            yy, xx = np.nonzero(m)
            yy, xx = yy + ya, xx + xa
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            img[yy[ok], xx[ok]] = (0.85, 0.88, 0.9)
            lab[yy[ok], xx[ok]] = 8
        elif t == "patch":
            cv2.rectangle(img, px(o["x0"], o["y0"]), px(o["x1"], o["y1"]), (o["g"],) * 3, -1)
            cv2.rectangle(img, px(o["x0"], o["y0"]), px(o["x1"], o["y1"]), (0.15, 0.15, 0.15), 2)
        elif t == "stain":
            cv2.ellipse(img, px(o["x"], o["y"]), (int(o["a"] * rho), int(o["b"] * rho)), o["ang"], 0, 360,
                        (o["g"],) * 3, -1, cv2.LINE_AA)
        elif t == "crack":
            pts = np.array([px(x, y) for x, y in o["pts"]], np.int32)
            cv2.polylines(img, [pts], False, (0.12, 0.12, 0.12), 2, cv2.LINE_AA)
        elif t == "manhole":
            c, r = px(o["x"], o["y"]), int(o["r"] * rho)
            cv2.circle(img, c, r, (0.25, 0.27, 0.3), -1, cv2.LINE_AA)
            cv2.circle(img, c, r, (0.1, 0.1, 0.1), 3, cv2.LINE_AA)
            for k in range(-3, 4):
                cv2.line(img, (c[0] + k * r // 4, c[1] - r + 4), (c[0] + k * r // 4, c[1] + r - 4), (0.45, 0.45, 0.45), 2)
        elif t == "gum":
            cv2.circle(img, px(o["x"], o["y"]), max(1, int(o["r"] * rho)), (o["g"],) * 3, -1, cv2.LINE_AA)
    img *= (1 + 0.05 * rng.standard_normal((h, w), dtype=np.float32))[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), lab, None


def build_scene(sc: Any, x_range: tuple[float, float], seed: int) -> Scene:
    """Generate the street of one slice.

    Args:
        sc: the ``scene`` group of the configuration.
        x_range: (x_min, x_max) extent of the street along x, metres.
        seed: integer seed; the same seed gives the same scene.
    Returns:
        The scene (faces with textures, lamp positions, sky panorama).
    """
    rng = np.random.default_rng([seed, 101])
    x_min, x_max = float(x_range[0]), float(x_range[1])
    half_road = sc.road_width_m / 2
    y_front0 = half_road + sc.sidewalk_width_m
    y_back = y_front0 + sc.max_setback_m + 2.0
    frho, grho = float(sc.facade_texels_per_m), float(sc.ground_texels_per_m)
    faces: list[Face] = []
    fronts = []
    casters = []  # boxes that cast sun shadows onto the ground
    # buildings on both sides (side = +1: y > 0)
    for side in (1, -1):
        x = x_min
        while x < x_max:
            bw = float(rng.uniform(*sc.building_width_m))
            x1 = min(x + bw, x_max)
            if x_max - x1 < 3.0:
                x1 = x_max
            setback = float(rng.uniform(0, sc.max_setback_m)) if rng.random() < 0.7 else 0.0
            yf = y_front0 + setback
            hgt = float(rng.uniform(*sc.building_height_m))
            lo = np.array([x, yf if side > 0 else -y_back, 0.0])
            hi = np.array([x1, y_back if side > 0 else -yf, hgt])
            front = (1, -side)
            fns = {front: lambda wm, hm, r: _facade_texture(wm, hm, frho, r),
                   "default": lambda wm, hm, r: _plain_texture(wm, hm, frho / 2, r, None, 3, "wall")}
            rhos = {(a, s): (frho if (a, s) == front else frho / 2) for a in range(3) for s in (-1, 1)}
            skip = [(2, -1), (2, 1), (1, side)]  # bottom, top (never seen from the street), back
            faces += _box_faces(lo, hi, rhos, fns, {front: "facade", "default": "wall"}, rng, skip=skip)
            casters.append((lo, hi))
            fronts.append((side, x, x1, yf, hgt))
            x = x1
    # closing buildings across both ends
    for end, sgn in ((x_max, -1), (x_min, 1)):
        lo = np.array([end if sgn < 0 else end - 5, -y_back, 0.0])
        hi = np.array([end + 5 if sgn < 0 else end, y_back, float(rng.uniform(10, 20))])
        fns = {(0, sgn): lambda wm, hm, r: _facade_texture(wm, hm, frho / 2, r)}
        casters.append((lo, hi))
        faces += _box_faces(lo, hi, frho / 2, fns, {"default": "facade"}, rng,
                            skip=[(a, s) for a in range(3) for s in (-1, 1) if (a, s) != (0, sgn)])
    # trees and lamps on the sidewalks, near the curb
    lamps = []
    for side in (1, -1):
        x = x_min + rng.uniform(2, sc.tree_spacing_m)
        while x < x_max - 2:
            yc = side * (half_road + 0.9)
            r_t, th = 0.15, float(rng.uniform(2.6, 3.4))
            casters.append((np.array([x - r_t, yc - r_t, 0]), np.array([x + r_t, yc + r_t, th])))
            faces += _box_faces(np.array([x - r_t, yc - r_t, 0]), np.array([x + r_t, yc + r_t, th]), 32.0,
                                {"default": lambda wm, hm, r: _plain_texture(wm, hm, 32.0, r, (0.2, 0.28, 0.33), 9)},
                                {"default": "pole"}, rng, skip=[(2, -1), (2, 1)])
            cs = float(rng.uniform(1.0, 1.5))
            base = _rand_color(rng, [0.15, 0.45, 0.2], 0.08)
            c_lo, c_hi = np.array([x - cs, yc - cs, th - 0.3]), np.array([x + cs, yc + cs, th + rng.uniform(1.8, 2.8)])
            casters.append((c_lo, c_hi))
            faces += _box_faces(c_lo, c_hi,
                                32.0, {"default": lambda wm, hm, r, b=base: _plain_texture(wm, hm, 32.0, r, b, 6, "leaves")},
                                {"default": "veg", (2, 1): "veg_top"}, rng)
            x += float(rng.uniform(0.6, 1.4) * sc.tree_spacing_m)
        x = x_min + rng.uniform(2, sc.lamp_spacing_m) + (sc.lamp_spacing_m / 2 if side < 0 else 0)
        while x < x_max - 2:
            yc = side * (half_road + 0.4)
            ph = 6.0
            casters.append((np.array([x - 0.08, yc - 0.08, 0]), np.array([x + 0.08, yc + 0.08, ph])))
            faces += _box_faces(np.array([x - 0.08, yc - 0.08, 0]), np.array([x + 0.08, yc + 0.08, ph]), 32.0,
                                {"default": lambda wm, hm, r: _plain_texture(wm, hm, 32.0, r, (0.35, 0.35, 0.33), 9)},
                                {"default": "pole"}, rng, skip=[(2, -1)])
            arm_y = yc - side * 1.2
            lo, hi = np.array([x - 0.25, min(yc, arm_y), ph - 0.25]), np.array([x + 0.25, max(yc, arm_y), ph])
            faces += _box_faces(lo, hi, 32.0, {"default": lambda wm, hm, r: _plain_texture(wm, hm, 32.0, r, (0.3, 0.3, 0.3), 9)},
                                {"default": "pole", (2, -1): "lamp"}, rng)
            lamps.append([x, arm_y, ph - 0.35])
            x += sc.lamp_spacing_m
    # ground tiles (seamless large-scale noise from global coarse grids)
    y_half = y_back
    coarse = []
    for cell in (6.0, 1.5, 0.4):
        gw = int((x_max - x_min) / cell) + 4
        gh = int(2 * y_half / cell) + 4
        coarse.append((rng.uniform(-1, 1, size=(gh, gw)).astype(np.float32) / (1 + (cell < 1)), cell, x_min))
    objs = _ground_objects(x_min, x_max, y_half, sc, rng)
    tile = 40.0
    x = x_min
    while x < x_max - 1e-6:
        x1 = min(x + tile, x_max)
        faces.append(_make_face(2, 1, 0.0, {0: (x, x1), 1: (-y_half, y_half)}, grho,
                                lambda wm, hm, r, a=x, b=x1: _ground_tile(a, b, y_half, grho, sc, objs, coarse, r),
                                "ground", rng))
        x = x1
    # sky panorama: clouds over elevation 90..0 (rows) x azimuth -180..180 (cols)
    sky = np.clip(0.5 + 0.6 * _fractal((256, 1024), rng, (6, 24, 96)), 0, 1)
    ramp = np.linspace(0, 1, 64, dtype=np.float32)
    sky[:, -64:] = sky[:, -64:] * (1 - ramp) + sky[:, :1] * ramp  # no seam at azimuth +-180 deg
    return Scene(faces, np.array(lamps, dtype=np.float64).reshape(-1, 3), sky, (x_min, x_max), y_half,
                 int(seed), fronts, float(half_road), np.array(casters, dtype=np.float64).reshape(-1, 2, 3))


def _ground_objects(x_min, x_max, y_half, sc, rng) -> list:
    """Road markings, patches, stains, cracks, manholes on the ground, in world metres."""
    half_road = sc.road_width_m / 2
    objs = []
    x = x_min + rng.uniform(0, 6)
    while x < x_max:  # dashed centre line
        objs.append(dict(type="dash", x0=x, x1=x + 3.0, y0=0.07, y1=-0.07))
        x += 9.0
    for s in (1, -1):  # edge lines with gaps
        x = x_min
        while x < x_max:
            ln = rng.uniform(15, 40)
            objs.append(dict(type="dash", x0=x, x1=x + ln, y0=s * (half_road - 0.3), y1=s * (half_road - 0.42)))
            x += ln + rng.uniform(2, 8)
    x = x_min + rng.uniform(10, 30)
    while x < x_max:  # zebra crossings and painted words
        if rng.random() < 0.5:
            for k in range(int(sc.road_width_m / 1.0)):
                yk = -half_road + 0.25 + k * 1.0
                objs.append(dict(type="dash", x0=x, x1=x + 3.0, y0=yk + 0.5, y1=yk))
        else:
            lane = rng.choice([-1, 1]) * half_road / 2
            objs.append(dict(type="text", text=str(rng.choice(["STOP", "BUS", "SLOW", "30", "TAXI", "KEEP CLEAR"])),
                             x0=x, x1=x + 2.5, y0=lane + 1.2, y1=lane - 1.2, seed=int(rng.integers(1 << 31))))
        x += rng.uniform(20, 45)
    n = int((x_max - x_min) * 0.4)
    for _ in range(n):
        xa, ya = rng.uniform(x_min, x_max), rng.uniform(-half_road, half_road)
        objs.append(dict(type="patch", x0=xa, x1=xa + rng.uniform(0.5, 3), y0=ya, y1=ya + rng.uniform(-1.5, 1.5),
                         g=float(rng.uniform(0.2, 0.4))))
    for _ in range(int((x_max - x_min) * 5)):
        objs.append(dict(type="stain", x=rng.uniform(x_min, x_max), y=rng.uniform(-y_half, y_half), a=rng.uniform(0.05, 0.5),
                         b=rng.uniform(0.03, 0.3), ang=float(rng.uniform(0, 180)), g=float(rng.uniform(0.08, 0.6))))
    for _ in range(int((x_max - x_min) * 1.5)):
        p0 = np.array([rng.uniform(x_min, x_max), rng.uniform(-y_half, y_half)])
        steps = np.cumsum(rng.normal(0, 0.4, size=(8, 2)), axis=0)
        objs.append(dict(type="crack", pts=[tuple(p) for p in p0 + steps]))
    for _ in range(int((x_max - x_min) / 12)):
        objs.append(dict(type="manhole", x=rng.uniform(x_min, x_max), y=rng.uniform(-half_road + 1, half_road - 1),
                         r=rng.uniform(0.3, 0.45)))
    for _ in range(int((x_max - x_min) * 3)):
        ys = rng.choice([-1, 1]) * rng.uniform(half_road + 0.2, y_half)
        objs.append(dict(type="gum", x=rng.uniform(x_min, x_max), y=ys, r=rng.uniform(0.015, 0.06),
                         g=float(rng.uniform(0.15, 0.35))))
    return objs
