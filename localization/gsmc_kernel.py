"""GSMC's arcs algorithm compiled with numba for the CPU (``gsmc.kernel: numba``; :mod:`localization.gsmc`).

:func:`score_matches` is :func:`localization.gsmc.match_scores`' ``arcs`` algorithm as one loop over the matches,
heights and candidate points: per (match, height, point) triple it computes the quantities of
:meth:`localization.gsmc._Scene.features` with the same float64 operations in the same order, bounds the angles
where the point can count (the exact distance arcs, then the cone and projection-guard arcs of
:meth:`_Scene.arcs`, each widened by the same margins), and decides every angle left with the pair test of
:meth:`_Scene.agree` (visibility, in front, fold-over guard, distortion, inside the image, equal label), written
with the same operations (no fused multiply-add, no fast-math). The torch path stays the definition on every
device and the reference of the tests (identical scores); this one never materialises a triple or a pair.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .gsmc import _EPS_ANGLE, _EPS_COS  # the arcs' margins, as the torch path's

_TINY = np.finfo(np.float64).tiny


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _first_last(a, b, step):  # pragma: no cover (compiled)
    """First and last grid index n with n * step in [a - eps, b + eps] (unwrapped integers)."""
    return int(math.ceil((a - _EPS_ANGLE) / step)), int(math.floor((b + _EPS_ANGLE) / step))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _interval(t, centre, step, N, inside):  # pragma: no cover (compiled)
    """Grid interval (start in [0, N), length) of the angles phi with cos(phi - centre) >= t (``inside``) or
    <= t (not ``inside``), widened by the angle margin."""
    if inside:
        if t <= -1:
            return 0, N
        if t > 1:
            return 0, 0
        g = math.acos(t)
        s, e = _first_last(centre - g, centre + g, step)
    else:
        if t >= 1:
            return 0, N
        if t < -1:
            return 0, 0
        g = math.acos(t)
        s, e = _first_last(centre + g, centre + 2 * math.pi - g, step)
    return s % N, min(max(e - s + 1, 0), N)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _intersect(s1, L1, s2, L2, N, out_s, out_L, i):  # pragma: no cover (compiled)
    """Intersection of the circular integer intervals [s1, s1 + L1) and [s2, s2 + L2) of Z_N (starts in [0, N)):
    two disjoint pieces written to ``out_s[i:i + 2]``, ``out_L[i:i + 2]`` (as :func:`localization.gsmc._intersect`)."""
    b = s2 - s1
    if b < 0:
        b += N
    out_s[i], out_L[i] = (s1 + b) % N, max(min(b + L2, L1) - b, 0)
    out_s[i + 1], out_L[i + 1] = s1, max(min(b + L2 - N, L1), 0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def score_matches(order, near_ptr, near_idx, valid, Bc, r, hgt, Xk, P, V, lo, hi, ct, labels, cphi, sphi,
                  qlab, width, height, cam, max_radius2, cos_fov, keep_hyp, scores):  # pragma: no cover (compiled)
    """GSMC scores of the matches ``order`` (written to ``scores``, in place).

    Args:
        order: (K',) int64 matches to score.
        near_ptr, near_idx: candidate points of match k: ``near_idx[near_ptr[k]:near_ptr[k + 1]]`` (rows of P).
        valid: (K, H) bool heights with a circle.
        Bc: (K, 3, 3) camera bases; r, hgt: (K, H) circle radii and heights; Xk: (K, 3) matched points;
        P, V: (M, 3) points and mean viewing directions; lo, hi, ct: (M,) distance bounds and cone cosines;
        labels: (M,) int64 point labels (all in the (u, a1, a2) basis: :class:`localization.gsmc._Scene`).
        cphi, sphi: (N,) cos / sin of the angles.
        qlab: (height * width,) int64 query label map, row-major; width, height: pixels.
        cam: (8,) fx, fy, cx, cy, k1, k2, p1, p2 (:attr:`reconstruction.camera.Camera.intrinsics`);
        max_radius2: the fold-over guard; cos_fov: the guard's cosine bound (:attr:`_Scene.cos_fov`).
        keep_hyp: (K * H * N,) bool hypotheses kept by the view-cone restriction, or (0,) for all.
        scores: (K,) int64 output.
    """
    N, H = len(cphi), valid.shape[1]
    step = 2 * math.pi / N
    fx, fy, cx, cy, k1, k2, p1, p2 = cam[0], cam[1], cam[2], cam[3], cam[4], cam[5], cam[6], cam[7]
    two_p1, two_p2 = 2 * p1, 2 * p2
    u_end, v_end, w_last, h_last = width - 0.5, height - 0.5, width - 1.0, height - 1.0
    pix = np.empty(N, np.int64)  # pixel index of each angle's projection, -1 where the pair test fails
    restrict = len(keep_hyp) > 0
    counts = np.zeros(H * N, np.int64)
    starts = np.zeros(2, np.int64)
    lengths = np.zeros(2, np.int64)
    mid_s, mid_L = np.zeros(4, np.int64), np.zeros(4, np.int64)
    fin_s, fin_L = np.zeros(8, np.int64), np.zeros(8, np.int64)
    for k in order:
        counts[:] = 0
        for h in range(H):
            if not valid[k, h]:
                continue
            rk, base = r[k, h], h * N
            for q in range(near_ptr[k], near_ptr[k + 1]):
                j = near_idx[q]
                # the triple's quantities (_Scene.features, same operations)
                bx = P[j, 1] - Xk[k, 1]
                by = P[j, 2] - Xk[k, 2]
                z = P[j, 0] - hgt[k, h]
                A = z * z + rk * rk + bx * bx + by * by
                B1, B2 = 2 * rk * bx, 2 * rk * by
                lo_j, hi_j, ct_j = lo[j], hi[j], ct[j]
                # distance arcs (_Scene.arcs): |C - X_j|^2 = A + B cos(phi - theta)
                B = math.sqrt(B1 * B1 + B2 * B2)
                d_near = max(lo_j, math.sqrt(max(A - B, 0.0)))
                d_far = min(hi_j, math.sqrt(A + B))
                Bs = max(B, _TINY)
                c1, c2 = (lo_j * lo_j - A) / Bs - _EPS_COS, (hi_j * hi_j - A) / Bs + _EPS_COS
                if not (c1 <= 1 and c2 >= -1 and d_near <= d_far * (1 + 1e-12)):
                    continue
                theta = math.atan2(by, bx)
                psa, psb = math.acos(min(max(c2, -1.0), 1.0)), math.acos(min(max(c1, -1.0), 1.0))
                s1, e1 = _first_last(theta - psb, theta - psa, step)
                s2, e2 = _first_last(theta + psa, theta + psb, step)
                s2, e2 = max(s2, e1 + 1), min(e2, s1 + N - 1)
                starts[0], lengths[0] = s1 % N, min(max(e1 - s1 + 1, 0), N)
                starts[1], lengths[1] = s2 % N, min(max(e2 - s2 + 1, 0), N)
                # cone and projection-guard arcs (necessary conditions)
                a0 = -(z * V[j, 0] + bx * V[j, 1] + by * V[j, 2])
                v1, v2 = rk * V[j, 1], rk * V[j, 2]
                t = (a0 - (d_near if ct_j >= 0 else d_far) * ct_j) / max(math.sqrt(v1 * v1 + v2 * v2), _TINY)
                sc, Lc = _interval(t + _EPS_COS, math.atan2(v2, v1), step, N, False)
                if Lc == 0:
                    continue
                m00 = Bc[k, 0, 0] * z + Bc[k, 0, 1] * rk
                m01 = Bc[k, 1, 0] * z + Bc[k, 1, 1] * rk
                m02 = Bc[k, 2, 0] * z + Bc[k, 2, 1] * rk
                m10 = Bc[k, 0, 1] * bx + Bc[k, 0, 2] * by
                m11 = Bc[k, 1, 1] * bx + Bc[k, 1, 2] * by
                m12 = Bc[k, 2, 1] * bx + Bc[k, 2, 2] * by
                m20 = Bc[k, 0, 1] * by - Bc[k, 0, 2] * bx
                m21 = Bc[k, 1, 1] * by - Bc[k, 1, 2] * bx
                m22 = Bc[k, 2, 1] * by - Bc[k, 2, 2] * bx
                tf = (d_near * cos_fov - m02) / max(math.sqrt(m12 * m12 + m22 * m22), _TINY)
                sf, Lf = _interval(tf - _EPS_COS, math.atan2(m22, m12), step, N, True)
                if Lf == 0:
                    continue
                lab = labels[j]
                for p in range(2):  # distance arcs intersected with the cone arc, then with the guard arc
                    _intersect(starts[p], lengths[p], sc, Lc, N, mid_s, mid_L, 2 * p)
                for p in range(4):
                    _intersect(mid_s[p], mid_L[p], sf, Lf, N, fin_s, fin_L, 2 * p)
                for p in range(8):  # each piece as at most two unwrapped runs of angles
                    s0, L = fin_s[p], fin_L[p]
                    e0 = min(s0 + L, N)
                    for seg in range(2):
                        n0 = s0 if seg == 0 else 0
                        n1 = e0 if seg == 0 else s0 + L - e0
                        for n in range(n0, n1):  # the pair test, without branches or loads from the label map
                            c, s = cphi[n], sphi[n]
                            # (_Scene.agree, same operations; every test evaluated, then combined)
                            dist = np.sqrt(A + B1 * c + B2 * s)
                            along = a0 - (v1 * c + v2 * s)
                            X = m00 + c * m10 + s * m20
                            Y = m01 + c * m11 + s * m21
                            Z = m02 + c * m12 + s * m22
                            x, y = X / Z, Y / Z
                            r2 = x * x + y * y
                            radial = 1 + k1 * r2 + k2 * r2 * r2
                            xd = x * radial + two_p1 * x * y + p2 * (r2 + 2 * x * x)
                            yd = y * radial + p1 * (r2 + 2 * y * y) + two_p2 * x * y
                            u = fx * xd + cx
                            v = fy * yd + cy
                            ok = ((dist >= lo_j) & (dist <= hi_j) & (along >= dist * ct_j) & (Z > 1e-6)
                                  & (r2 < max_radius2) & (u > -0.5) & (u < u_end) & (v > -0.5) & (v < v_end))
                            ui = min(max(np.rint(u if ok else 0.0), 0.0), w_last)
                            vi = min(max(np.rint(v if ok else 0.0), 0.0), h_last)
                            pix[n] = np.int64(vi) * width + np.int64(ui) if ok else -1
                        for n in range(n0, n1):  # the label lookups
                            px = pix[n]
                            if px >= 0 and qlab[px] == lab and (not restrict or keep_hyp[(k * H + h) * N + n]):
                                counts[base + n] += 1
        scores[k] = counts.max()
