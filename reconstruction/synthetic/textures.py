"""Procedural textures of the synthetic street (BGR uint8 drawing with OpenCV, float32 in [0, 1] arithmetic):
value and fractal noise, random colours and text, posters, wall materials (bricks, plaster, stone), windows,
whole building facades (albedo, class ids and window ids) and plain textures (side walls, poles, foliage).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
          cv2.FONT_HERSHEY_COMPLEX_SMALL, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_PLAIN)
_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789&-"))


def _noise(shape: tuple[int, int], rng: np.random.Generator, cells: float, amp: float = 1.0) -> np.ndarray:
    """Smooth value noise in [-amp, amp] with about ``cells`` random values along the longer side."""
    h, w = shape
    s = max(h, w) / max(cells, 1.0)
    gh, gw = max(2, int(math.ceil(h / s)) + 1), max(2, int(math.ceil(w / s)) + 1)
    g = rng.uniform(-amp, amp, size=(gh, gw)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _fractal(shape: tuple[int, int], rng: np.random.Generator, octaves=(4, 16, 64, 256), gain=0.6) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    a = 1.0
    for c in octaves:
        out += _noise(shape, rng, c, a)
        a *= gain
    return out / sum(gain ** i for i in range(len(octaves)))


def _rand_color(rng, base=None, spread=0.15, lo=0.05, hi=0.95) -> tuple:
    c = rng.uniform(lo, hi, 3) if base is None else np.asarray(base) + rng.uniform(-spread, spread, 3)
    return tuple(float(x) for x in np.clip(c, 0, 1))


def _rand_text(rng, n_lo=3, n_hi=9) -> str:
    return "".join(rng.choice(_ALPHABET, size=int(rng.integers(n_lo, n_hi + 1))))


def _put_text_box(img, text, x0, y0, x1, y1, color, rng, thickness=None):
    """Draw ``text`` scaled to fill the box (x0, y0)-(x1, y1) (texels)."""
    font = int(rng.choice(_FONTS))
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = min((x1 - x0) / max(tw, 1), (y1 - y0) / max(th, 1)) * 0.9
    if scale <= 0.05:
        return
    th_px = thickness or max(1, int(scale * rng.uniform(1.2, 2.5)))
    (tw, th), base = cv2.getTextSize(text, font, scale, th_px)
    bx0, by0 = int(math.floor(min(x0, x1))), int(math.floor(min(y0, y1)))
    bw, bh = int(math.ceil(abs(x1 - x0))) + 1, int(math.ceil(abs(y1 - y0))) + base + 1
    mask = np.zeros((bh, bw), np.uint8)  # OpenCV >= 5 draws text on 8-bit images only
    cv2.putText(mask, text, (int((bw - tw) / 2), int((bh - base + th) / 2)), font, scale, 255, th_px, cv2.LINE_AA)
    H, W = img.shape[:2]
    ya, yb, xa, xb = max(by0, 0), min(by0 + bh, H), max(bx0, 0), min(bx0 + bw, W)
    if ya >= yb or xa >= xb:
        return
    a = (mask[ya - by0:yb - by0, xa - bx0:xb - bx0].astype(np.float32) / 255)[..., None]
    region = img[ya:yb, xa:xb].astype(np.float32)
    scale_c = 255.0 if img.dtype == np.uint8 else 1.0
    img[ya:yb, xa:xb] = (region * (1 - a) + np.array(color, np.float32) * scale_c * a).astype(img.dtype)


def _poster(img, lab, x0, y0, x1, y1, rng):
    """A random poster: background, shapes, lines of text; class 7."""
    cv2.rectangle(img, (x0, y0), (x1, y1), _rand_color(rng), -1)
    w, h = x1 - x0, y1 - y0
    for _ in range(int(rng.integers(3, 9))):
        kind = rng.integers(3)
        c = _rand_color(rng)
        if kind == 0:
            cv2.circle(img, (int(x0 + rng.uniform(0, w)), int(y0 + rng.uniform(0, h))),
                       int(rng.uniform(0.05, 0.3) * min(w, h)), c, -1, cv2.LINE_AA)
        elif kind == 1:
            a, b = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
            cv2.rectangle(img, (int(x0 + a[0] * w), int(y0 + a[1] * h)), (int(x0 + b[0] * w), int(y0 + b[1] * h)), c, -1)
        else:
            pts = np.stack([x0 + rng.uniform(0, w, 4), y0 + rng.uniform(0, h, 4)], 1).astype(np.int32)
            cv2.fillPoly(img, [pts], c, cv2.LINE_AA)
    n_lines = int(rng.integers(1, 4))
    for k in range(n_lines):
        ya = y0 + h * (0.1 + 0.8 * k / n_lines)
        _put_text_box(img, _rand_text(rng), x0 + 0.05 * w, ya, x1 - 0.05 * w, ya + 0.8 * h / n_lines,
                      _rand_color(rng), rng)
    cv2.rectangle(lab, (x0, y0), (x1, y1), 7, -1)


def _wall_material(h: int, w: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float32 wall albedo: bricks, plaster or stone blocks, with weathering."""
    style = rng.choice(["brick", "brick", "plaster", "stone"])
    v1 = np.arange(h, dtype=np.float32)
    u1 = np.arange(w, dtype=np.float32)
    if style in ("brick", "stone"):
        if style == "brick":
            base = np.array(rng.choice([[0.25, 0.3, 0.6], [0.3, 0.35, 0.55], [0.45, 0.5, 0.6], [0.2, 0.25, 0.45]]))
            bw, bh = 0.25 * rho, 0.08 * rho
        else:
            base = np.array(_rand_color(rng, [0.6, 0.62, 0.62], 0.15))
            bw, bh = rng.uniform(0.4, 0.8) * rho, rng.uniform(0.25, 0.4) * rho
        rows = np.floor(v1 / bh).astype(np.int32)  # (h,)
        offs = ((rows % 2) * 0.5 + (rows % 7) * 0.13 if style == "brick" else (rows * 0.37) % 1.0) * bw
        uo = u1[None, :] + offs[:, None].astype(np.float32)  # (h, w)
        cols = np.floor(uo * (1 / bw)).astype(np.int32)
        ncols = int(w // bw) + 3
        pal = np.clip(base + rng.normal(0, 0.06 if style == "brick" else 0.02, size=(int(rows.max()) + 1, ncols, 3)), 0, 1)
        pal *= rng.uniform(0.75, 1.2, size=pal.shape[:2] + (1,))
        pal = pal.astype(np.float32).reshape(-1, 3)
        img = np.take(pal, rows[:, None] * ncols + cols, axis=0)
        fv = ((v1 % bh) / bh)[:, None]
        fu = uo * (1 / bw) - cols
        if style == "brick":
            mortar = (fv < 0.16) | (fu < 0.05)
            img[mortar] = np.float32(0.62)
        else:
            edge = np.minimum(np.minimum(fv, 1 - fv) * bh, np.minimum(fu, 1 - fu) * bw)
            img *= np.clip(0.55 + edge / (0.03 * rho), 0.55, 1.0)[..., None]
    else:
        base = np.array(_rand_color(rng, rng.choice([[0.55, 0.7, 0.8], [0.7, 0.75, 0.75], [0.5, 0.6, 0.75],
                                                      [0.65, 0.55, 0.45]]), 0.08))
        img = np.empty((h, w, 3), np.float32)
        img[:] = base.astype(np.float32)
    mod = 1 + 0.25 * _fractal((h, w), rng, (3, 12, 40))  # stains
    mod += 0.08 * rng.standard_normal((h, w), dtype=np.float32)  # grain
    mod += 0.12 * cv2.resize(rng.uniform(-1, 1, size=(4, max(2, w // 6))).astype(np.float32), (w, h),
                             interpolation=cv2.INTER_LINEAR)  # vertical streaks
    if style == "plaster":  # blotchy render: dirt, patches of repair, moss at mid frequencies
        mod += 0.12 * _noise((h, w), rng, max(h, w) / (0.5 * rho))
        mod += 0.22 * _fractal((h, w), rng, (max(h, w) / (0.6 * rho), max(h, w) / (0.2 * rho)), 0.7)
    img *= mod[..., None]
    return np.clip(img, 0, 1, out=img)


def _window(img, lab, glass, gid, x0, y0, x1, y1, frame_c, rng, shop=False):
    """One window with frame, glass (gradient, reflections, curtains), muntins; class 4, glass id ``gid``."""
    w, h = x1 - x0, y1 - y0
    ft = max(2, int(0.07 * min(w, h) if not shop else 0.04 * min(w, h)))
    cv2.rectangle(img, (x0, y0), (x1, y1), frame_c, -1)
    gx0, gy0, gx1, gy1 = x0 + ft, y0 + ft, x1 - ft, y1 - ft
    if gx1 <= gx0 + 2 or gy1 <= gy0 + 2:
        return
    gh, gw = gy1 - gy0, gx1 - gx0
    top, bot = np.array(_rand_color(rng, [0.35, 0.28, 0.22], 0.1)), np.array(_rand_color(rng, [0.12, 0.1, 0.08], 0.05))
    t = np.linspace(0, 1, gh, dtype=np.float32)[:, None, None]
    pane = (top * (1 - t) + bot * t) * np.ones((1, gw, 1), np.float32)
    # slanted reflection band
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    a = rng.uniform(-1.5, 1.5)
    d = (xx - a * yy) / max(gw, 1) - rng.uniform(-0.5, 1.0)
    pane += (0.25 * np.exp(-(d / rng.uniform(0.05, 0.2)) ** 2))[..., None].astype(np.float32)
    if shop:  # display items
        for _ in range(int(rng.integers(4, 12))):
            c = _rand_color(rng)
            px, py = int(rng.uniform(0, gw)), int(rng.uniform(0.3, 1.0) * gh)
            s = int(rng.uniform(0.04, 0.15) * gw) + 2
            if rng.random() < 0.5:
                cv2.rectangle(pane, (px, py), (px + s, py - int(s * rng.uniform(0.5, 2))), c, -1)
            else:
                cv2.circle(pane, (px, py), s // 2, c, -1, cv2.LINE_AA)
        if rng.random() < 0.7:
            _put_text_box(pane, _rand_text(rng, 2, 6), 0.1 * gw, 0.05 * gh, 0.9 * gw, 0.25 * gh, _rand_color(rng), rng)
    elif rng.random() < 0.6:  # curtains
        c = np.array(_rand_color(rng, [0.75, 0.75, 0.75], 0.2))
        cw = int(gw * rng.uniform(0.2, 0.5))
        folds = (0.85 + 0.15 * np.sin(xx[:, :cw] * rng.uniform(0.5, 1.2)))[..., None]
        side = rng.integers(3)
        if side == 0:
            pane[:, :cw] = c * folds
        elif side == 1:
            pane[:, gw - cw:] = c * folds
        else:
            pane[: gh // 3] = c * (0.85 + 0.15 * np.sin(xx[: gh // 3] * 0.8))[..., None]
    if rng.random() < 0.15:  # a plant or a sticker
        cv2.circle(pane, (int(rng.uniform(0.2, 0.8) * gw), int(gh * 0.9)), max(2, gw // 8), _rand_color(rng, [0.1, 0.5, 0.15], 0.1), -1)
    img[gy0:gy1, gx0:gx1] = np.clip(pane, 0, 1)
    glass[gy0:gy1, gx0:gx1] = gid
    if not shop:  # muntins
        mt = max(1, ft // 2)
        cv2.line(img, ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1), frame_c, mt)
        if rng.random() < 0.6:
            ym = y0 + int(h * rng.uniform(0.25, 0.4))
            cv2.line(img, (x0, ym), (x1, ym), frame_c, mt)
    cv2.rectangle(lab, (x0, y0), (x1, y1), 4, -1)


def _facade_texture(width_m: float, height_m: float, rho: float, rng: np.random.Generator):
    """Facade of a building: (H, W, 3) uint8 BGR albedo, (H, W) uint8 labels, (H, W) uint8 glass ids."""
    w, h = max(8, int(round(width_m * rho))), max(8, int(round(height_m * rho)))
    img = _wall_material(h, w, rho, rng)
    lab = np.full((h, w), 3, np.uint8)
    glass = np.zeros((h, w), np.uint8)
    frame_c = _rand_color(rng, rng.choice([[0.9, 0.9, 0.9], [0.15, 0.15, 0.15], [0.3, 0.45, 0.2], [0.2, 0.3, 0.5]]), 0.05)
    gf = rng.uniform(3.6, 4.5)
    fh = rng.uniform(2.9, 3.4)
    n_floors = max(0, int((height_m - gf - 0.6) / fh))
    ww, wh = rng.uniform(0.9, 1.3), rng.uniform(1.3, 1.7)
    n_win = max(1, int(width_m / rng.uniform(2.0, 3.0)))
    pitch = width_m / n_win
    gid = 1
    shutters = rng.random() < 0.3
    cornice_c = _rand_color(rng, [0.8, 0.8, 0.8], 0.1)
    for f in range(n_floors):
        z_floor = gf + f * fh  # from the ground, metres
        yc = h - (z_floor + 0.9) * rho  # sill row
        cv2.rectangle(img, (0, int(h - z_floor * rho)), (w, int(h - z_floor * rho + 0.12 * rho)), cornice_c, -1)
        for k in range(n_win):
            if rng.random() < 0.05:
                continue
            xc = (k + 0.5) * pitch * rho
            x0, x1 = int(xc - ww * rho / 2), int(xc + ww * rho / 2)
            y1, y0 = int(yc), int(yc - wh * rho)
            if y0 < 2:
                continue
            _window(img, lab, glass, gid, x0, y0, x1, y1, frame_c, rng)
            gid = gid % 250 + 1
            cv2.rectangle(img, (x0 - 4, y1), (x1 + 4, y1 + max(2, int(0.06 * rho))), cornice_c, -1)  # sill
            if shutters:
                sc = _rand_color(rng, [0.2, 0.5, 0.3], 0.1)
                for sx0 in (x0 - int(0.45 * ww * rho), x1):
                    sx1 = sx0 + int(0.45 * ww * rho)
                    cv2.rectangle(img, (sx0, y0), (sx1, y1), sc, -1)
                    for yy in range(y0, y1, max(3, int(0.05 * rho))):
                        cv2.line(img, (sx0, yy), (sx1, yy), tuple(0.6 * np.array(sc)), 1)
                    cv2.rectangle(lab, (sx0, y0), (sx1, y1), 4, -1)
            if rng.random() < 0.05:  # satellite dish / sign / flower box
                cv2.rectangle(img, (x0, y1 - 6), (x1, y1 + int(0.2 * rho)), _rand_color(rng), -1)
    # ground floor: doors, shop windows, a sign band, posters, graffiti
    z_band = gf - 0.9
    x = rng.uniform(0.2, 1.0)
    while x < width_m - 1.0:
        kind = rng.choice(["door", "shop", "shop", "wall"])
        if kind == "door":
            dw = rng.uniform(1.0, 1.8)
            if x + dw > width_m - 0.2:
                break
            x0, x1, y0, y1 = int(x * rho), int((x + dw) * rho), int(h - 2.3 * rho), h - 1
            dc = _rand_color(rng)
            cv2.rectangle(img, (x0, y0), (x1, y1), dc, -1)
            for p in range(int(rng.integers(1, 4))):
                py0 = y0 + int((p + 0.2) * (y1 - y0) / 3)
                cv2.rectangle(img, (x0 + 6, py0), (x1 - 6, py0 + int((y1 - y0) / 4)), tuple(0.7 * np.array(dc)), 2)
            cv2.circle(img, (x1 - 10, int(h - 1.05 * rho)), 3, (0.7, 0.8, 0.85), -1)
            cv2.rectangle(img, (x0 + 4, y0 - int(0.3 * rho)), (x0 + int(0.35 * rho), y0 - 4), (0.9, 0.9, 0.9), -1)
            _put_text_box(img, str(int(rng.integers(1, 200))), x0 + 6, y0 - int(0.28 * rho), x0 + int(0.33 * rho), y0 - 6,
                          (0.1, 0.1, 0.1), rng, 1)
            cv2.rectangle(lab, (x0, y0), (x1, y1), 5, -1)
            x += dw + rng.uniform(0.4, 1.2)
        elif kind == "shop":
            sw = rng.uniform(1.5, 4.0)
            if x + sw > width_m - 0.2:
                sw = width_m - 0.2 - x
                if sw < 1.0:
                    break
            x0, x1 = int(x * rho), int((x + sw) * rho)
            _window(img, lab, glass, gid, x0, int(h - (z_band - 0.1) * rho), x1, int(h - 0.5 * rho), frame_c, rng, shop=True)
            gid = gid % 250 + 1
            if rng.random() < 0.8:  # shop sign above
                y0, y1 = int(h - (z_band + 0.75) * rho), int(h - (z_band + 0.1) * rho)
                bg = _rand_color(rng)
                cv2.rectangle(img, (x0, y0), (x1, y1), bg, -1)
                fg = tuple(float(c) for c in (1 - np.array(bg)) * rng.uniform(0.7, 1.0))
                _put_text_box(img, _rand_text(rng), x0 + 4, y0 + 3, x1 - 4, y1 - 3, fg, rng)
                cv2.rectangle(lab, (x0, y0), (x1, y1), 7, -1)
            x += sw + rng.uniform(0.3, 1.0)
        else:
            pw = rng.uniform(0.5, 1.0)
            if x + pw < width_m - 0.2 and rng.random() < 0.7:
                ph = pw * rng.uniform(1.2, 1.6)
                zb = rng.uniform(0.8, 1.3)
                _poster(img, lab, int(x * rho), int(h - (zb + ph) * rho), int((x + pw) * rho), int(h - zb * rho), rng)
            x += pw + rng.uniform(0.5, 1.5)
    for _ in range(int(rng.integers(0, 4))):  # graffiti on the lower wall (stays class "wall")
        pts = np.stack([rng.uniform(0, w, 6), h - rng.uniform(0.2, 2.0, 6) * rho], 1).astype(np.int32)
        cv2.polylines(img, [pts], False, _rand_color(rng, lo=0.2, hi=1.0), int(rng.integers(3, 9)), cv2.LINE_AA)
    if rng.random() < 0.6:  # drain pipe
        xp = int(rng.uniform(0, w))
        cv2.rectangle(img, (xp, 0), (xp + int(0.1 * rho), h), _rand_color(rng, [0.4, 0.4, 0.4], 0.1), -1)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), lab, glass


def _plain_texture(width_m, height_m, rho, rng, base, label, pattern="noise"):
    """Texture for side walls, trunks, poles, lamp heads and canopies."""
    w, h = max(4, int(round(width_m * rho))), max(4, int(round(height_m * rho)))
    if pattern == "wall":
        img = _wall_material(h, w, rho, rng)
        for _ in range(int(rng.integers(0, 3))):
            pts = np.stack([rng.uniform(0, w, 5), h - rng.uniform(0.2, 2.2, 5) * rho], 1).astype(np.int32)
            cv2.polylines(img, [pts], False, _rand_color(rng, lo=0.2), int(rng.integers(3, 8)), cv2.LINE_AA)
        if rng.random() < 0.5 and w > 0.8 * rho:
            pw = min(0.7, width_m * 0.6)
            x0 = int(rng.uniform(0, w - pw * rho))
            lab = np.full((h, w), label, np.uint8)
            _poster(img, lab, x0, int(h - 2.1 * rho), x0 + int(pw * rho), int(h - 1.0 * rho), rng)
            return (np.clip(img, 0, 1) * 255).astype(np.uint8), lab, None
    elif pattern == "leaves":  # clumps of leaves: high-frequency blobs with dark gaps, per-clump shade
        hi = _noise((h, w), rng, max(h, w) / 3.0) + 0.5 * _noise((h, w), rng, max(h, w) / 1.5)
        shade = 0.8 + 0.5 * _noise((h, w), rng, max(h, w) / 8.0)
        a = np.clip((hi + 0.2) * 2.5, 0.15, 1.0) * shade
        hue = _noise((h, w), rng, max(h, w) / 5.0, 0.12)
        img = (np.array(base, np.float32) * a[..., None]) * (1 + np.stack([hue, -hue, 0.5 * hue], -1))
    else:
        img = np.broadcast_to(np.array(base, np.float32), (h, w, 3)).copy()
        img *= (1 + 0.3 * _fractal((h, w), rng, (2, 8, 32)))[..., None]
        img *= (1 + 0.1 * rng.standard_normal((h, w), dtype=np.float32))[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), np.full((h, w), label, np.uint8), None
