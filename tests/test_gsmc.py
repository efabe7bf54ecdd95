"""GSMC (localization.gsmc): the pose family of a match, projection, scores on a constructed labelled street,
weighted sampling, the reduced mode, and an end-to-end run on a generated demo with ground-truth semantics."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from localization import gsmc
from localization.ransac import sample_minimal_sets
from reconstruction.camera import Camera
from reconstruction.geometry import camera_center, gravity_in_camera, horizontal_basis, pose_errors, random_rotation
from reconstruction.label_map import LabelledMap
from reconstruction.visibility import visible

CAM = Camera("OPENCV", 160, 120, (110.0, 110.0, 80.0, 60.0, -0.05, 0.01, 0.0005, -0.0003))
WALL_Y = 7.0  # building fronts at y = +-7 m, ground z = 0, world up +z


def _look(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """cam_from_world rotation of a camera looking along +x rotated by yaw (about +z) and pitch."""
    base = np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])  # x right = -y, y down = -z, z forward = +x
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    Rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    Ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])  # pitch down for p < 0
    return base @ (Rz @ Ry).T


def _surface_label(P: np.ndarray) -> np.ndarray:
    """Label of surface points: road 1 / sidewalk 2 on the ground, a 3 m x 2 m checker of labels 3-5 on the walls."""
    on_ground = np.abs(P[:, 2]) < 1e-6
    ground = np.where(np.abs(P[:, 1]) < 4.0, 1, 2)
    wall = 3 + (np.floor(P[:, 0] / 3.0) + np.floor(P[:, 2] / 2.0) + (P[:, 1] > 0)).astype(int) % 3
    return np.where(on_ground, ground, wall)


def _render_labels(cam_from_world: np.ndarray) -> np.ndarray:
    """Ray-cast the label map of the street (ground, two walls up to 15 m, sky 0) with the distorted camera."""
    W, H = CAM.width, CAM.height
    xs, ys = np.meshgrid(np.arange(W), np.arange(H))
    pix = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    xn = CAM.to_pycolmap().cam_from_img(pix + 0.5)
    rays = np.concatenate([xn, np.ones((len(xn), 1))], 1) @ cam_from_world[:, :3]  # world directions
    C = camera_center(cam_from_world)
    best = np.full(len(rays), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, value in ((2, 0.0), (1, WALL_Y), (1, -WALL_Y)):
            t = (value - C[axis]) / rays[:, axis]
            hit = C + t[:, None] * rays
            ok = (t > 0) & (t < best) & ((axis == 2) | ((hit[:, 2] >= 0) & (hit[:, 2] < 15)))
            best = np.where(ok, t, best)
    lab = np.zeros(len(rays), np.int64)
    hit = np.isfinite(best)
    P = C + best[hit, None] * rays[hit]
    P[np.abs(P[:, 2]) < 1e-6, 2] = 0.0
    lab[hit] = _surface_label(P)
    return lab.reshape(H, W)


def _street(rng: np.random.Generator, n_points: int = 3000):
    """A labelled map of the street seen from database cameras along the road; returns (lmap, database poses)."""
    db = [np.concatenate([_look(-10, -2), (-_look(-10, -2) @ np.array([x, -2.0, 1.8]))[:, None]], 1)
          for x in np.arange(-10.0, 40.0, 2.0)]
    n_wall = n_points * 2 // 3
    side = rng.choice([-1.0, 1.0], n_wall)
    wall = np.stack([rng.uniform(0, 45, n_wall), side * WALL_Y, rng.uniform(0, 15, n_wall)], 1)
    ground = np.stack([rng.uniform(0, 45, n_points - n_wall), rng.uniform(-WALL_Y, WALL_Y, n_points - n_wall),
                       np.zeros(n_points - n_wall)], 1)
    xyz = np.concatenate([wall, ground])
    centers = camera_center(np.array(db))
    d_min, d_max, view_dir, spread = [], [], [], []
    for X in xyz:
        v = centers - X
        dist = np.linalg.norm(v, axis=1)
        seen = dist < 35.0
        u = v[seen] / dist[seen, None]
        m = u.mean(0) / np.linalg.norm(u.mean(0))
        d_min.append(dist[seen].min()); d_max.append(dist[seen].max())  # noqa: E702
        view_dir.append(m); spread.append(np.arccos(np.clip(u @ m, -1, 1)).max())  # noqa: E702
    M = len(xyz)
    lmap = LabelledMap(xyz=xyz, label=_surface_label(xyz), confidence=np.ones(M, np.float32),
                       track_length=np.full(M, 3, np.int32), d_min=np.array(d_min, np.float32),
                       d_max=np.array(d_max, np.float32), view_dir=np.array(view_dir, np.float32),
                       view_spread=np.array(spread, np.float32), cam_height=np.full(M, 1.8, np.float32), num_classes=6)
    return lmap, np.array(db)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small elementwise kernels: one torch thread is faster on a busy 2-core machine (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def scene():
    """The street, a query camera (lateral offset and yaw unlike the database's), its label map, and 12 true and 12
    wrong matches (a true keypoint's bearing paired with a random other point)."""
    rng = np.random.default_rng(0)
    lmap, db = _street(rng)
    R = _look(-4, -2)
    C = np.array([8.0, -1.4, 1.8])
    T = np.concatenate([R, (-R @ C)[:, None]], 1)
    labels = _render_labels(T)
    Xc = lmap.xyz @ R.T + T[:, 3]
    uv = CAM.to_pycolmap().img_from_cam(Xc) - 0.5
    inside = (Xc[:, 2] > 2) & np.all((uv > 5) & (uv < [CAM.width - 6, CAM.height - 6]), 1) & (lmap.xyz[:, 2] > 0.5)
    true_rows = rng.choice(np.nonzero(inside)[0], 12, replace=False)
    bearings = Xc[true_rows] / np.linalg.norm(Xc[true_rows], axis=1, keepdims=True)
    wrong_rows = rng.choice(np.nonzero(~inside & (lmap.xyz[:, 2] > 0.5))[0], 12, replace=False)
    return {"lmap": lmap, "db": db, "T": T, "labels": labels, "bearings": np.concatenate([bearings, bearings]),
            "rows": np.concatenate([true_rows, wrong_rows]), "is_true": np.arange(24) < 12}


def _scores(scene, **kw):
    lmap, rows = scene["lmap"], scene["rows"]
    up = np.array([0.0, 0, 1])
    heights = lmap.cam_height[rows][:, None].astype(np.float64) + np.array([-0.5, 0.0, 0.5])
    g = gravity_in_camera(scene["db"], up)
    kw.setdefault("point_rows", np.arange(len(lmap.xyz)))
    return gsmc.match_scores(scene["bearings"], lmap.xyz[rows], heights, g, up, lmap, query_labels=scene["labels"],
                             camera=CAM, **kw)


class TestPoseFamily:
    @pytest.mark.parametrize("up", [(0, 0, 1.0), (0, 0, -1.0), (0.3, -0.5, 0.8)])
    def test_exact_angle_gives_true_pose(self, up):
        rng = np.random.default_rng(1)
        up = np.array(up) / np.linalg.norm(up)
        R, C = random_rotation(rng), rng.normal(size=(3,)) * 10
        X = C + R.T @ np.array([2.0, -1.0, 12.0])
        d = R @ (X - C) / np.linalg.norm(X - C)
        u, a1, a2 = horizontal_basis(up)
        w = (X - C) - ((X - C) @ u) * u
        Rf, Cf, valid = gsmc.pose_family(d[None], X[None], R @ up, up, np.array([[C @ u, C @ u + 0.5]]),
                                         np.array([math.atan2(w @ a2, w @ a1), 0.3]))
        assert Rf.shape == (1, 2, 3, 3) and Cf.shape == (1, 2, 2, 3) and valid.shape == (1, 2)
        np.testing.assert_allclose(Rf[0, 0], R, atol=1e-12)
        np.testing.assert_allclose(Cf[0, 0, 0], C, atol=1e-9)
        # every hypothesis sees X along the bearing, with the camera at its height
        for h in range(2):
            for n in range(2):
                b = Rf[0, n] @ (X - Cf[0, h, n])
                np.testing.assert_allclose(b / np.linalg.norm(b), d, atol=1e-12)
                assert Cf[0, h, n] @ u == pytest.approx(C @ u + 0.5 * h)
                np.testing.assert_allclose(Rf[0, n] @ up, R @ up, atol=1e-12)

    def test_sampled_family_contains_truth(self, scene):
        """360 angles x 3 heights around the true match: some hypothesis within half an angle step of the truth
        (position error <= horizontal distance x 0.5 deg, rotation error <= 0.5 deg plus the gravity noise)."""
        lmap, T = scene["lmap"], scene["T"]
        up = np.array([0.0, 0, 1])
        g = gravity_in_camera(scene["db"], up)  # from the database, not from T
        k = 0
        row = scene["rows"][k]
        heights = np.array([[1.3, 1.8, 2.3]])
        Rf, Cf, valid = gsmc.pose_family(scene["bearings"][k:k + 1], lmap.xyz[row][None], g, up, heights,
                                         np.arange(360) * math.pi / 180)
        assert valid.all()
        R = np.broadcast_to(Rf[0][None], (3, 360, 3, 3)).reshape(-1, 3, 3)
        Cs = Cf[0].reshape(-1, 3)
        poses = np.concatenate([R, -np.einsum("nij,nj->ni", R, Cs)[:, :, None]], 2)
        et, er = pose_errors(poses, np.broadcast_to(T, poses.shape))
        best = np.argmin(et + er * 0.1)
        r = np.linalg.norm((lmap.xyz[row] - camera_center(T))[:2])
        assert et[best] < r * math.radians(0.5) + 0.02 and er[best] < 0.6

    def test_invalid_height_and_horizontal_ray(self):
        up = np.array([0.0, 0, 1])
        d = np.array([[0.0, 0.0, 1.0], [0.0, -0.5, 1.0]])  # camera looks along +z_cam; up_cam = -y_cam
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        X = np.array([[5.0, 0, 2.0], [5.0, 0, 2.0]])
        _, _, valid = gsmc.pose_family(d, X, np.array([0.0, -1, 0]), up, np.array([[1.0, 3.0], [1.0, 3.0]]), [0.0])
        # horizontal ray: no circle; upward ray: only a camera below the point
        assert valid.tolist() == [[False, False], [True, False]]

    def test_shapes_checked(self):
        with pytest.raises(ValueError, match="heights"):
            gsmc.pose_family(np.zeros((2, 3)), np.zeros((2, 3)), [0, 0, 1], [0, 0, 1], np.zeros(2), [0.0])


class TestScores:
    def test_true_pose_scores_its_visible_points(self, scene):
        """A true match whose family contains the true pose scores nearly every point visible from that pose
        (the shared visibility model, projected with the distortion), a shifted pose far fewer."""
        lmap, T = scene["lmap"], scene["T"]
        up = np.array([0.0, 0, 1])
        R, C = T[:, :3], camera_center(T)
        k = 0
        X = lmap.xyz[scene["rows"][k]]
        u, a1, a2 = horizontal_basis(up)
        w = (X - C) - ((X - C) @ u) * u
        phi = math.atan2(w @ a2, w @ a1)
        family = dict(num_angles=1, camera=CAM, query_labels=scene["labels"], point_rows=np.arange(len(lmap.xyz)))
        rotated = np.array([[math.cos(phi), math.sin(phi), 0], [-math.sin(phi), math.cos(phi), 0], [0, 0, 1]])
        # the world turned about +z so that the true angle is phi = 0, the family's one angle
        lm = dataclasses.replace(lmap, xyz=lmap.xyz @ rotated.T, view_dir=lmap.view_dir @ rotated.T)
        Xr = lm.xyz[scene["rows"][k]]
        d = scene["bearings"][k]
        true = gsmc.match_scores(d[None], Xr[None], np.array([[C @ u]]), R @ up, up, lm, **family)[0]
        shifted = gsmc.match_scores(d[None], Xr[None], np.array([[C @ u + 2.0]]), R @ up, up, lm, **family)[0]
        diff = C - lmap.xyz
        vis = visible((diff * diff).sum(1), (diff * lmap.view_dir).sum(1), lmap.d_min, lmap.d_max, lmap.view_spread,
                      (1.0, 1.0), math.radians(10))
        uv, ok = CAM.project((lmap.xyz - C) @ R.T)
        visible_count = int((vis & ok & CAM.in_image(uv)).sum())
        assert 0.9 * visible_count <= true <= visible_count and visible_count > 100
        assert shifted < 0.75 * true

    def test_arcs_equal_brute_force(self, scene):
        """The arcs algorithm decides the same pairs as testing all of them: identical scores, 360 angles, with
        and without the view-cone restriction and a distance margin (4 true and 4 wrong matches), with either
        pair loop (numba's compiled one and torch's, against the brute force's torch definition)."""
        sub = {**scene, "bearings": scene["bearings"][8:16], "rows": scene["rows"][8:16]}
        lmap, rows = sub["lmap"], sub["rows"]
        view = (lmap.view_dir[rows].astype(np.float64), lmap.view_spread[rows].astype(np.float64))
        for kw in ({}, {"restrict_to_view_cone": True, "match_view": view, "distance_margin": 0.2}):
            brute = _scores(sub, algorithm="brute", **kw)
            assert brute.max() > 500
            for kernel in ("numba", "torch"):
                np.testing.assert_array_equal(_scores(sub, kernel=kernel, **kw), brute)
        # a label the query image does not show: those points are skipped, the scores stay the brute force's
        relabelled = {**sub, "lmap": dataclasses.replace(lmap, label=np.where(lmap.label == 5, 9, lmap.label))}
        np.testing.assert_array_equal(_scores(relabelled, num_angles=36), _scores(relabelled, num_angles=36,
                                                                                   algorithm="brute"))

    def test_true_matches_score_higher(self, scene):
        s = _scores(scene)
        true, wrong = s[scene["is_true"]], s[~scene["is_true"]]
        # 1378 vs 636 (with the cone's half-angle halved, as before the shared visibility model: 3.5x)
        assert np.median(true) > 2 * max(np.median(wrong), 1)
        assert (true > np.median(wrong)).mean() >= 0.9

    def test_reduced_mode_still_ranks_true_higher(self, scene):
        rng = np.random.default_rng(3)
        sub = np.sort(rng.choice(len(scene["lmap"].xyz), 600, replace=False))
        s = _scores(scene, num_angles=36, point_rows=sub)
        true, wrong = s[scene["is_true"]], s[~scene["is_true"]]
        assert np.median(true) > 1.8 * max(np.median(wrong), 1)  # 206 vs 109
        assert (true > np.median(wrong)).mean() >= 0.75

    def test_batching_and_view_cone_do_not_change_true_scores(self, scene):
        full = _scores(scene, num_angles=90)
        small = _scores(scene, num_angles=90, max_batch_elements=2000)  # many small batches
        np.testing.assert_array_equal(full, small)
        lmap, rows = scene["lmap"], scene["rows"]
        cone = _scores(scene, num_angles=90, restrict_to_view_cone=True,
                       match_view=(lmap.view_dir[rows].astype(np.float64), lmap.view_spread[rows].astype(np.float64)))
        assert np.all(cone <= full)
        t = scene["is_true"]
        assert np.median(cone[t]) >= 0.8 * np.median(full[t])  # the truth lies inside the cone

    def test_resampled_query_labels(self, scene):
        """A label map at twice the camera's resolution gives the same scores as the native one."""
        big = np.repeat(np.repeat(scene["labels"], 2, axis=0), 2, axis=1)
        a = _scores(scene, num_angles=36)
        b = _scores({**scene, "labels": big}, num_angles=36)
        assert np.abs(a - b).max() <= 0.05 * a.max()

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    def test_cuda_matches_cpu(self, scene):
        cpu = _scores(scene, num_angles=36)
        gpu = _scores(scene, num_angles=36, device="cuda", max_batch_elements=50_000_000)
        assert np.abs(cpu - gpu).max() <= 1  # float64 on both: only a pair on a rounding boundary can differ

    def test_empty_inputs(self, scene):
        assert _scores(scene, point_rows=np.zeros(0, np.int64)).tolist() == [0] * 24


class TestWeightedSampling:
    def test_high_scores_drawn_more(self):
        scores = np.array([100, 100, 50, 0, 0, 0, 0, 0, 0, 0])
        w = gsmc.sampling_weights(scores, eps=1.0)
        np.testing.assert_allclose(w.sum(), 1.0)
        assert w[0] == pytest.approx(101 / (250 + 10))
        sets = sample_minimal_sets(len(w), 20000, np.random.default_rng(0), w)
        freq = np.bincount(sets.ravel(), minlength=len(w)) / sets.size
        assert freq[0] > 3 * freq[3] and freq[2] > freq[3] and freq[3] > 0  # eps keeps zero-score matches drawable

    def test_gravity_from_database(self):
        up = np.array([0.0, 0, 1])
        db = [np.concatenate([_look(yaw, -2), np.zeros((3, 1))], 1) for yaw in (-30, 0, 45)]
        np.testing.assert_allclose(gravity_in_camera(np.array(db), up), _look(0, -2) @ up, atol=1e-12)
        with pytest.raises(ValueError):
            gravity_in_camera(np.zeros((0, 3, 4)), up)


def test_pycolmap_estimator_refuses_weights(tmp_path):
    """pycolmap's RANSAC samples uniformly: GSMC with it is an error, not GSMC without its weights."""
    from types import SimpleNamespace

    from localization.localize import build_conf
    from localization.ssmc import SSMCLocalizer

    ds = SimpleNamespace(maps={})
    over = ["localizer.ransac.estimator=pycolmap", "localizer.semantics.source=labels",
            f"localizer.semantics.labels={tmp_path / 'labels.h5'}"]
    with pytest.raises(ValueError, match="pycolmap cannot draw GSMCLocalizer's weighted minimal sets"):
        gsmc.GSMCLocalizer(build_conf("gsmc", overrides=over).localizer, ds, tmp_path)
    SSMCLocalizer(build_conf("ssmc", overrides=over).localizer, ds, tmp_path)  # no weights: allowed


def test_arcs_equal_brute_force_on_seasons_mini(seasons_cmu):
    """On a real map (slice 1's SfM points and their observation statistics) and a real query camera (with its
    distortion), the arcs algorithm gives the brute-force scores (point labels and the query label map made up:
    the test is of the geometry)."""
    from reconstruction.datasets import load_cmu
    from reconstruction.sfm_map import _visibility_stats, load_reconstruction

    ds = load_cmu(seasons_cmu, [1])
    map_id = next(iter(ds.maps))
    rec = load_reconstruction(ds, map_id)
    ids = np.array(sorted(rec.points3D))
    xyz = np.array([rec.points3D[int(i)].xyz for i in ids])
    centers = {i: img.cam_from_world().inverse().translation for i, img in rec.images.items()}
    stats = _visibility_stats(rec, ids, xyz, centers)
    M = len(ids)
    lmap = LabelledMap(xyz=xyz, label=(ids % 4).astype(np.int64), confidence=np.ones(M, np.float32),
                       track_length=np.full(M, 3, np.int32), cam_height=np.zeros(M, np.float32), num_classes=4,
                       **stats)
    q = next(q for q in ds.queries if q.cam_from_world is not None)
    T, cam = q.cam_from_world, q.camera
    Xc = xyz @ T[:, :3].T + T[:, 3]
    uv, ok = cam.project(Xc)
    ok &= cam.in_image(uv) & (Xc[:, 2] > 1)
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.choice(np.nonzero(ok)[0], 4, replace=False), rng.choice(np.nonzero(~ok)[0], 2)])
    bearings = Xc[np.r_[rows[:4], rows[:2]]]  # 4 true matches, 2 true keypoints paired with wrong points
    bearings = bearings / np.linalg.norm(bearings, axis=1, keepdims=True)
    up = ds.up
    C = camera_center(T)
    heights = np.full((6, 1), C @ up) + np.array([-0.5, 0.0, 0.5])
    xs, ys = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    labels = ((xs // 97 + ys // 61) % 4).astype(np.int64)
    kw = dict(num_angles=36, camera=cam, query_labels=labels, point_rows=np.arange(M))
    g = T[:, :3] @ up
    brute = gsmc.match_scores(bearings, xyz[rows], heights, g, up, lmap, algorithm="brute", **kw)
    assert brute[:4].min() > 10
    for kernel in ("numba", "torch"):
        np.testing.assert_array_equal(gsmc.match_scores(bearings, xyz[rows], heights, g, up, lmap, kernel=kernel,
                                                        **kw), brute)
