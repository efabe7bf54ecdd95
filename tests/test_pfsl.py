"""PFSL: resampling, ESS, quaternion averaging, motion model, likelihood, convergence of the filter on a
synthetic labelled corridor (known trajectory, noisy odometry), odometry synthesis flag, sequence cache."""
import copy
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from localization import particle_filter as pf
from localization import pfsl
from reconstruction import odometry
from reconstruction.camera import Camera
from reconstruction.geometry import (average_quaternions, axis_angle_to_rotmat, camera_center, pose_errors,
                                    qvec_to_rotmat, random_rotation, rotmats_to_qvecs)
from reconstruction.records import ImageRecord

CAM = Camera("PINHOLE", 160, 120, (90.0, 90.0, 80.0, 60.0))
WALL_Y, WALL_H, CELL, K = 6.0, 8.0, 2.0, 9  # labels 0-7 on cells, 8 = sky


def _cell_labels(seed=0):
    return np.random.default_rng(seed).integers(0, 8, size=(3, 80, 8))  # (surface, x cell, y/z cell)


def _label_at(P, table):
    """Labels of points (N, 3) on the corridor: surface 0 wall y=-6, 1 wall y=+6, 2 ground."""
    ix = np.clip(np.floor((P[:, 0] + 20) / CELL).astype(int), 0, 79)
    ground = np.abs(P[:, 2]) < 1e-6
    surf = np.where(ground, 2, np.where(P[:, 1] > 0, 1, 0))
    iz = np.where(ground, np.floor((P[:, 1] + WALL_Y) / 1.5), np.floor(P[:, 2] / CELL)).astype(int)
    return table[surf, ix, np.clip(iz, 0, 7)]


def _pose(x, y, yaw, z=1.5):
    f = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    r = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    R = np.stack([r, [0, 0, -1.0], f])  # rows: camera axes in world = cam_from_world rotation
    C = np.array([x, y, z])
    return np.concatenate([R, (-R @ C)[:, None]], axis=1)


def _render(T, table):
    """Ray-cast label image (H, W) of the corridor from pose T (pinhole CAM)."""
    fx, fy, cx, cy = CAM.params
    u, v = np.meshgrid(np.arange(CAM.width) + 0.5, np.arange(CAM.height) + 0.5)  # COLMAP centres
    d = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1).reshape(-1, 3) @ T[:, :3]
    C = camera_center(T)
    ts = []
    for plane_y in (-WALL_Y, WALL_Y):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (plane_y - C[1]) / d[:, 1]
        z = C[2] + t * d[:, 2]
        ts.append(np.where((t > 0) & (z >= 0) & (z <= WALL_H), t, np.inf))
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = -C[2] / d[:, 2]
    ts.append(np.where(tg > 0, tg, np.inf))
    t = np.min(ts, axis=0)
    hit = np.isfinite(t)
    P = C + np.where(hit, t, 0)[:, None] * d
    P[np.argmin(ts, axis=0) == 2, 2] = 0.0
    P[np.argmin(ts, axis=0) == 0, 1] = -WALL_Y
    P[np.argmin(ts, axis=0) == 1, 1] = WALL_Y
    lab = np.where(hit, _label_at(P, table), 8)
    return lab.reshape(CAM.height, CAM.width)


def _map(table, n=4000, seed=1):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 3, n)
    x = rng.uniform(-15, 130, n)
    P = np.stack([x, np.where(s == 0, -WALL_Y, np.where(s == 1, WALL_Y, rng.uniform(-WALL_Y, WALL_Y, n))),
                  np.where(s == 2, 0.0, rng.uniform(0, WALL_H, n))], 1)
    target = np.stack([P[:, 0], np.zeros(n), np.full(n, 1.5)], 1) - P
    vd = target / np.linalg.norm(target, axis=1, keepdims=True)
    return pf.MapPoints(P, _label_at(P, table), np.full(n, 0.5), np.full(n, 25.0), vd, np.full(n, 1.4), K)


def _trajectory(n=24):
    k = np.arange(n)
    return [_pose(1.5 * i, -2.0 + 0.6 * np.sin(i / 4), 0.15 * np.sin(i / 6)) for i in k]


class TestResampling:
    def test_systematic_counts(self):
        rng = np.random.default_rng(0)
        for _ in range(20):
            w = rng.random(37) ** 3
            w /= w.sum()
            idx = pf.systematic_resample(w, rng)
            counts = np.bincount(idx, minlength=len(w))
            assert len(idx) == len(w) and np.all(np.diff(idx) >= 0)
            assert np.all(counts >= np.floor(len(w) * w) - 1e-9) and np.all(counts <= np.ceil(len(w) * w) + 1e-9)

    def test_degenerate_and_known(self):
        rng = np.random.default_rng(1)
        assert np.all(pf.systematic_resample(np.eye(5)[3], rng) == 3)
        idx = pf.systematic_resample(np.array([0.5, 0.0, 0.25, 0.25]), rng)
        assert sorted(idx.tolist()) == [0, 0, 2, 3]

    def test_ess(self):
        assert pf.effective_sample_size(np.full(10, 0.1)) == pytest.approx(10)
        assert pf.effective_sample_size(np.eye(10)[2]) == pytest.approx(1)
        assert pf.effective_sample_size(np.array([0.5, 0.5, 0, 0])) == pytest.approx(2)
        w = pf.normalise_log_weights(np.array([0.0, np.log(3.0), -np.inf]))
        np.testing.assert_allclose(w, [0.25, 0.75, 0.0])
        np.testing.assert_allclose(pf.normalise_log_weights(np.full(4, -np.inf)), 0.25)


class TestRotations:
    def test_rotmats_to_qvecs_round_trip(self):
        rng = np.random.default_rng(0)
        R = np.stack([random_rotation(rng) for _ in range(50)])
        q = rotmats_to_qvecs(R)
        np.testing.assert_allclose(qvec_to_rotmat(q), R, atol=1e-9)
        assert np.all(q[:, 0] >= 0)

    def test_average_quaternions(self):
        rng = np.random.default_rng(0)
        q0 = np.array([0.8, 0.2, -0.4, 0.4]); q0 /= np.linalg.norm(q0)
        # sign flips do not matter; symmetric perturbations average back to q0
        R0 = qvec_to_rotmat(q0)
        omega = rng.normal(size=(200, 3)) * 0.1
        Rs = axis_angle_to_rotmat(np.concatenate([omega, -omega])) @ R0
        q = rotmats_to_qvecs(Rs) * rng.choice([-1, 1], size=(400, 1))
        np.testing.assert_allclose(average_quaternions(q), q0, atol=1e-6)
        # weights select: all weight on one
        w = np.zeros(400); w[7] = 1
        np.testing.assert_allclose(qvec_to_rotmat(average_quaternions(q, w)), Rs[7], atol=1e-9)
        # mean of two rotations about z by 0 and 60 degrees is 30 degrees
        a = rotmats_to_qvecs(axis_angle_to_rotmat(np.array([[0, 0, 0.0], [0, 0, np.pi / 3]])))
        np.testing.assert_allclose(average_quaternions(a), [np.cos(np.pi / 12), 0, 0, np.sin(np.pi / 12)],
                                   atol=1e-9)

    def test_mean_pose(self):
        T = _pose(3.0, 1.0, 0.3)
        R = np.repeat(T[None, :, :3], 4, 0)
        C = camera_center(T) + np.array([[1.0, 0, 0], [-1, 0, 0], [0, 2, 0], [0, -2, 0]])
        np.testing.assert_allclose(pf.mean_pose(R, C, np.full(4, 0.25)), T, atol=1e-9)


class TestMotionModel:
    def test_predict_without_noise_composes(self):
        rng = np.random.default_rng(0)
        T0, T1 = _pose(0, 0, 0.1), _pose(1.2, 0.3, 0.25, 1.6)
        inc = odometry.relative_pose(T0, T1)
        R, C = np.repeat(T0[None, :, :3], 3, 0), np.repeat(camera_center(T0)[None], 3, 0)
        R1, C1 = pf.predict(R, C, inc, rng, 0.0, 0.0, 0.0, up=None)
        np.testing.assert_allclose(R1, np.repeat(T1[None, :, :3], 3, 0), atol=1e-12)
        np.testing.assert_allclose(C1, np.repeat(camera_center(T1)[None], 3, 0), atol=1e-12)
        np.testing.assert_allclose(pfsl._chain([odometry.relative_pose(T0, T1), odometry.relative_pose(T1, T0)]),
                                   np.concatenate([np.eye(3), np.zeros((3, 1))], 1), atol=1e-12)

    def test_noise_levels_and_3dof(self):
        rng = np.random.default_rng(0)
        T0, T1 = _pose(0, 0, 0.0), _pose(10.0, 0, 0.0)  # 10 m step
        R, C = np.repeat(T0[None, :, :3], 20000, 0), np.zeros((20000, 3)) + camera_center(T0)
        R1, C1 = pf.predict(R, C, odometry.relative_pose(T0, T1), rng, 0.05, 0.1, 0.02, up=np.array([0, 0, 1.0]))
        err = C1 - camera_center(T1)
        np.testing.assert_allclose(err[:, :2].std(0), 0.6, rtol=0.03)  # 0.05 * 10 + 0.1
        assert np.abs(err[:, 2]).max() < 1e-12  # height untouched in 3-DoF
        gz = R1 @ np.array([0, 0, 1.0])  # gravity in the camera frame unchanged
        np.testing.assert_allclose(gz, np.repeat((T1[:, :3] @ [0, 0, 1.0])[None], len(gz), 0), atol=1e-12)
        _, dR = pose_errors(np.concatenate([R1, np.zeros((len(R1), 3, 1))], 2)[:2000],
                            np.repeat(np.concatenate([T1[:, :3], np.zeros((3, 1))], 1)[None], 2000, 0))
        assert np.degrees(0.02) * 0.7 < np.sqrt(np.mean(dR ** 2)) < np.degrees(0.02) * 1.3


class TestObservation:
    def test_project_visible_and_likelihood(self):
        table = _cell_labels()
        pts = _map(table)
        T = _pose(10.0, -1.0, 0.1)
        uv, vis = pf.project_visible(T[None, :, :3], camera_center(T)[None], pts.xyz, pts.d_min, pts.d_max,
                                       pts.view_dir, pts.view_spread, CAM)
        assert vis.sum() > 100
        # near points project onto their own label (up to cell borders; far cells are a few pixels wide)
        obs = pf.observed_labels(_render(T, table), uv, vis)
        near = vis[0] & (np.linalg.norm(pts.xyz - camera_center(T), axis=1) < 20)
        assert near.sum() > 100 and (obs[0, near] == pts.label[near]).mean() > 0.85
        assert not vis[0, np.linalg.norm(pts.xyz - camera_center(T), axis=1) > 25 * 1.5].any()
        behind = pts.xyz[:, 0] < 9.0
        assert not vis[0, behind].any()
        # the true pose scores higher than a shifted one, with both likelihood models
        T2 = _pose(11.0, -1.0, 0.1)
        uv2, vis2 = pf.project_visible(T2[None, :, :3], camera_center(T2)[None], pts.xyz, pts.d_min, pts.d_max,
                                         pts.view_dir, pts.view_spread, CAM)
        obs_all = np.concatenate([obs, pf.observed_labels(_render(T, table), uv2, vis2)])
        q = pf.label_frequencies(_render(T, table), K)
        ll = pf.label_log_likelihood(obs_all, pts.label, q, 0.6, 1.0)
        la = pf.agreement_log_likelihood(obs_all, pts.label, 10.0)
        assert ll[0] > ll[1] and la[0] > la[1]

    def test_label_likelihood_known_answer(self):
        obs = np.array([[0, 1, -1], [1, 1, 1]])
        c = np.array([0, 0, 1])
        q = np.array([0.25, 0.5])
        ll = pf.label_log_likelihood(obs, c, q, alpha=0.5, tau=0.5)
        np.testing.assert_allclose(ll, [0.5 * (np.log(0.5 / 0.25 + 0.5) + np.log(0.5)),
                                        0.5 * (2 * np.log(0.5) + np.log(0.5 / 0.5 + 0.5))])
        np.testing.assert_allclose(pf.agreement_log_likelihood(obs, c, 3.0), [1.5, 1.0])

    def test_label_consistency(self):
        pairs = [(np.array([0, 0, 1, 1, 1]), np.array([0, 2, 1, 1, 1])), (np.array([0, 2]), np.array([0, 1]))]
        r = pf.label_consistency(pairs, 4)
        np.testing.assert_allclose(r[:3], [2 / 3, 1.0, 0.0])
        assert np.isnan(r[3])

    def test_correspondence_pixel_ratio(self):
        """The paper's rule: p_c over both ends of the correspondences, p_p over the images' pixels."""
        pairs = [(np.array([0, 0, 1]), np.array([0, 1, 1]))]  # p_c = (1/2, 1/2, 0, 0)
        images = [np.array([[0, 0, 0, 0], [1, 1, 2, 2]])]  # p_p = (1/2, 1/4, 1/4, 0)
        r = pf.correspondence_pixel_ratio(pairs, images, 4)
        np.testing.assert_allclose(r[:3], [1.0, 2.0, 0.0])
        assert np.isnan(r[3])
        assert list(np.flatnonzero(np.nan_to_num(r, nan=-1) > 0.2)) == [0, 1]


def _filter_conf(**over):
    conf = OmegaConf.to_container(OmegaConf.create(pfsl.default_conf))
    conf.update(num_particles=300)
    conf["visibility"]["max_points"] = 800
    for k, v in over.items():
        conf[k] = v
    return conf


def test_filter_beats_dead_reckoning():
    """Noisy odometry alone drifts by metres; the semantic filter stays close to the truth."""
    table = _cell_labels()
    pts = _map(table)
    traj = _trajectory()
    rng_odo = np.random.default_rng(5)
    inc = [None] + [odometry.perturb_odometry(odometry.relative_pose(a, b), rng_odo, 0.08, 0.03)
                    for a, b in zip(traj[:-1], traj[1:])]
    frames = [{"labels": _render(T, table), "camera": CAM, "cur_from_prev": d} for T, d in zip(traj, inc)]
    # dead reckoning with the same planar (3-DoF) motion model, without noise
    R, C, up = traj[0][None, :, :3], camera_center(traj[0])[None], np.array([0, 0, 1.0])
    dead = [traj[0]]
    for d in inc[1:]:
        R, C = pf.predict(R, C, d, np.random.default_rng(0), 0.0, 0.0, 0.0, up, traj[0][:, :3] @ up)
        dead.append(np.concatenate([R[0], (-R[0] @ C[0])[:, None]], 1))
    calls = []

    def single_image(k):
        calls.append(k)
        return (traj[0], {}) if k == 0 else (None, {"reason": "test: no estimate"})

    states = pf.run_filter(frames, pts, _filter_conf(), np.random.default_rng(0), single_image)
    assert all(s["success"] for s in states) and calls == [0]
    err_pf, _ = pose_errors(np.stack([s["cam_from_world"] for s in states]), np.stack(traj))
    err_dr, _ = pose_errors(np.stack(dead), np.stack(traj))
    assert err_dr[-6:].mean() > 1.0  # the odometry alone is really off
    assert err_pf[-6:].mean() < 0.3 * err_dr[-6:].mean() and err_pf.max() < 0.8
    assert any(s["resampled"] for s in states)
    # seeded: the same generator gives the same run
    again = pf.run_filter(frames, pts, _filter_conf(), np.random.default_rng(0), single_image)
    np.testing.assert_array_equal(states[-1]["cam_from_world"], again[-1]["cam_from_world"])


def test_filter_initialises_late_and_reinitialises():
    table = _cell_labels()
    pts = _map(table)
    traj = _trajectory(10)
    inc = [None] + [odometry.relative_pose(a, b) for a, b in zip(traj[:-1], traj[1:])]
    inc[6] = None  # a gap in the odometry forces a re-initialisation
    frames = [{"labels": _render(T, table), "camera": CAM, "cur_from_prev": d} for T, d in zip(traj, inc)]
    states = pf.run_filter(frames, pts, _filter_conf(), np.random.default_rng(0),
                             lambda k: (traj[k], {}) if k in (2, 6) else (None, {"reason": "none"}))
    assert [s["event"] for s in states[:3]] == ["uninitialised", "uninitialised", "init"]
    assert not states[0]["success"] and "not initialised" in states[0]["reason"]
    assert states[6]["event"] == "init" and states[6].get("gap")
    # a filter started far off with wrong odometry diverges; the divergence test re-initialises it
    wrong = [None] + [odometry.relative_pose(traj[0], _pose(0, 4.0, 1.2))] + [inc[2]] * 8
    frames = [{"labels": _render(T, table), "camera": CAM, "cur_from_prev": d} for T, d in zip(traj, wrong)]
    states = pf.run_filter(frames, pts, _filter_conf(), np.random.default_rng(0), lambda k: (traj[k], {}))
    assert "reinit" in [s["event"] for s in states]


# ------------------------------------------------------------------------------------------------- odometry
def _records(traj, cond="dusk", gt=True):
    return [ImageRecord(f"img_{i:05d}_c0_{1000 + i}us.jpg", f"slice2/query/img_{i:05d}_c0_{1000 + i}us.jpg", None,
                        CAM, "c0", cond, ("urban",), 1000.0 + i, "slice2", T if gt else None)
            for i, T in enumerate(traj)]


def test_odometry_sources(tmp_path):
    traj = _trajectory(5)
    conf = OmegaConf.create(pfsl.default_conf["odometry"])
    # auto without a file or a vo.csv: visual odometry, although the ground truth is there
    assert odometry.sequence_odometry(_records(traj), tmp_path, conf, np.random.default_rng(0)) == (None, "visual")
    conf.source = "gt"
    inc, src = odometry.sequence_odometry(_records(traj), tmp_path, conf, np.random.default_rng(0))
    assert src == "synthesised-from-gt" and inc[0] is None and len(inc) == 5
    t_err = [np.linalg.norm(camera_center(d) - camera_center(odometry.relative_pose(a, b)))
             for d, a, b in zip(inc[1:], traj[:-1], traj[1:])]
    assert 0 < max(t_err) < 0.5  # noisy, not exact
    with pytest.raises(Exception, match="no ground truth"):
        odometry.sequence_odometry(_records(traj, gt=False), tmp_path, conf, np.random.default_rng(0))
    recs = _records(traj)
    odo = tmp_path / "slice2" / "odometry" / "dusk.txt"
    odo.parent.mkdir(parents=True)
    lines = ["# header"]
    for a, b in zip(recs[:-1], recs[1:]):
        d = odometry.relative_pose(a.cam_from_world, b.cam_from_world)
        q = rotmats_to_qvecs(d[None, :, :3])[0]
        lines.append(f"{a.name} {b.name} " + " ".join(f"{v:.12f}" for v in (*q, *d[:, 3])))
    odo.write_text("\n".join(lines[:-1]) + "\n")  # last pair missing
    conf.perturb_file = False
    conf.source = "auto"
    inc, src = odometry.sequence_odometry(recs, tmp_path, conf, np.random.default_rng(0))
    assert src == "file" and inc[-1] is None
    np.testing.assert_allclose(inc[2], odometry.relative_pose(traj[1], traj[2]), atol=1e-9)


def _write_vo(path, times_us, first_from_vo):
    """A vo.csv in the Oxford RobotCar SDK's format for VO-frame poses at the given timestamps."""
    from scipy.spatial.transform import Rotation

    lines = [",".join(odometry.VO_HEADER)]
    for i in range(1, len(times_us)):
        rel = np.linalg.inv(first_from_vo[i - 1]) @ first_from_vo[i]  # destination_from_source
        yaw, pitch, roll = Rotation.from_matrix(rel[:3, :3]).as_euler("ZYX")
        lines.append(f"{times_us[i]},{times_us[i - 1]}," + ",".join(f"{v:.10e}" for v in (*rel[:3, 3], roll, pitch, yaw)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_se3_from_xyzrpy_is_the_sdk_convention():
    """R = Rz(yaw) Ry(pitch) Rx(roll), translation as given (Oxford RobotCar SDK build_se3_transform)."""
    a, b, c = 0.3, -0.2, 1.1
    Rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    Ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    Rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    T = odometry.se3_from_xyzrpy([1.0, 2.0, 3.0, a, b, c])[0]
    np.testing.assert_allclose(T[:3, :3], Rz @ Ry @ Rx, atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])


def test_robotcar_vo_csv(tmp_path):
    """Known answer: a vehicle driving a curve (x forward, z down), VO written at 16 Hz, camera looking backwards
    1.2 m behind and 0.5 m above the VO frame; the camera increments at images between the VO timestamps equal the
    true relative camera poses (interpolation error of a smooth curve), and a line breaking the chain is an error."""
    def vo_pose(t):  # first_from_vo at time t seconds: 8 m/s on a circle of radius 40 m, yaw = t * 0.2 rad/s
        yaw = 0.2 * t
        T = np.eye(4)
        T[:3, :3] = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        T[:3, 3] = [40 * np.sin(yaw), 40 * (1 - np.cos(yaw)), 0.01 * t]
        return T

    t0 = 1403774724_000000
    vo_times = t0 + np.arange(0, 4_000_000, 62_500)
    _write_vo(tmp_path / "vo" / "night" / "vo.csv", vo_times, np.array([vo_pose((t - t0) * 1e-6) for t in vo_times]))
    cam_to_vo = np.eye(4)
    cam_to_vo[:3, :3] = np.array([[0, 0, -1.0], [1, 0, 0], [0, -1, 0]])  # camera z = -x of the vehicle: backwards
    cam_to_vo[:3, 3] = [-1.2, 0.0, -0.5]
    img_times = t0 + np.array([100_000, 350_000, 600_000, 900_000])
    recs = [ImageRecord(f"rear/{t}.jpg", f"images/night/rear/{t}.jpg", None, CAM, "rear", "night", ("night",),
                        t * 1e-6, "all-merged") for t in img_times]
    conf = OmegaConf.create(pfsl.default_conf["odometry"])
    inc, src = odometry.sequence_odometry(recs, tmp_path, conf, np.random.default_rng(0), cam_to_vo[:3])
    assert src == "robotcar-vo" and inc[0] is None
    world_from_cam = [vo_pose((t - t0) * 1e-6) @ cam_to_vo for t in img_times]
    for i in range(1, len(recs)):
        true = (np.linalg.inv(world_from_cam[i]) @ world_from_cam[i - 1])[:3]
        assert np.linalg.norm(camera_center(inc[i]) - camera_center(true)) < 0.005  # ~2-3 m per step
        assert np.linalg.norm(inc[i][:, :3] - true[:, :3]) < 1e-4
    lines = (tmp_path / "vo" / "night" / "vo.csv").read_text().splitlines()
    lines[5] = lines[5].replace(f",{vo_times[4]},", f",{vo_times[4] + 1},", 1)  # line 6: destination off by 1 us
    (tmp_path / "vo" / "night" / "vo.csv").write_text("\n".join(lines))
    with pytest.raises(Exception, match="vo.csv:6: destination_timestamp"):
        odometry.sequence_odometry(recs, tmp_path, conf, np.random.default_rng(0), cam_to_vo[:3])


# ---------------------------------------------------------------------------------------------- localizer
class _Dataset:
    def __init__(self, root, queries):
        self.root, self.queries, self.database, self.up = root, queries, [], np.array([0, 0, 1.0])


def test_localizer_sequence_cache_resumes(tmp_path, monkeypatch):
    """Sequences are filtered once, cached per sequence; results carry the odometry flag; cache is reused."""
    table = _cell_labels()
    pts = _map(table)
    traj = _trajectory(6)
    queries = _records(traj, "dusk") + _records(traj, "night")
    for q in queries[6:]:
        q.name, q.key = q.name.replace("img_", "img_9"), q.key.replace("img_", "img_9")
    ds = _Dataset(tmp_path / "data", queries)
    conf = pfsl.PFSLLocalizer.merged_conf({"semantics": {"source": "labels", "labels": str(tmp_path / "labels-gt.h5")},
                                           "pfsl": {"num_particles": 100, "odometry": {"source": "gt"}}})
    monkeypatch.setattr(pfsl.SemanticLocalizer, "__init__", lambda self, c, d, w: (
        setattr(self, "conf", c), setattr(self, "dataset", d), setattr(self, "work_dir", w),
        setattr(self, "labels_path", tmp_path / "labels-gt.h5"), setattr(self, "bad_images", {})))
    monkeypatch.setattr(pfsl.SemanticLocalizer, "prepare", lambda self, queries=None, engine=None: None)
    loc = pfsl.PFSLLocalizer(conf, ds, tmp_path / "cache")
    by_key = {q.key: T for q, T in zip(queries, traj + traj)}
    lmap = type("L", (), {"xyz": pts.xyz, "label": pts.label, "d_min": pts.d_min, "d_max": pts.d_max,
                          "view_dir": pts.view_dir, "view_spread": pts.view_spread, "num_classes": K})
    loc.labelled_map = lambda map_id: lmap
    loc.label_reader = lambda: type("R", (), {"labels": lambda self, key: _render(by_key[key], table)})()
    calls = []
    loc._single_image = lambda q, rng: (calls.append(q.key), (by_key[q.key], {"num_inliers": 50}))[1]
    loc.prepare()
    assert len(calls) == 2  # one initialisation per sequence
    files = sorted(p.name for p in loc.sequence_dir.glob("*.json"))
    assert files == ["slice2_dusk_c0.json", "slice2_night_c0.json"]
    assert loc.sequence_dir.name.startswith("pfsl-gt-n100-")
    res = [loc.localize(q, np.random.default_rng(0)) for q in queries]
    assert all(r.success for r in res)
    assert all(r.info["odometry"] == "synthesised-from-gt" for r in res)
    err, _ = pose_errors(np.stack([r.cam_from_world for r in res]), np.stack(traj + traj))
    assert err.max() < 0.8
    assert res[0].info["event"] == "init" and res[0].num_inliers == 50
    # resumable: a deleted sequence is recomputed, identically (seeded by (seed, sequence)); the other is reused
    dusk = loc.sequence_dir / "slice2_dusk_c0.json"
    before = json.loads(dusk.read_text())
    dusk.unlink()
    night_mtime = (loc.sequence_dir / "slice2_night_c0.json").stat().st_mtime_ns
    loc2 = pfsl.PFSLLocalizer(conf, ds, tmp_path / "cache")
    loc2.labelled_map, loc2.label_reader, loc2._single_image = loc.labelled_map, loc.label_reader, loc._single_image
    loc2.prepare()
    assert len(calls) == 3
    assert json.loads(dusk.read_text()) == before
    assert (loc.sequence_dir / "slice2_night_c0.json").stat().st_mtime_ns == night_mtime
    # other settings -> another cache folder
    conf2 = copy.deepcopy(conf)
    conf2.pfsl.likelihood.tau = 0.1
    assert pfsl.PFSLLocalizer(conf2, ds, tmp_path / "cache").sequence_dir != loc.sequence_dir
    # gravity=database: the 3-DoF tilt given to the filter is the database estimate of the query's camera
    conf2.pfsl.gravity = "database"
    loc3 = pfsl.PFSLLocalizer(conf2, ds, tmp_path / "cache")
    loc3.labelled_map, loc3.label_reader, loc3._single_image = loc.labelled_map, loc.label_reader, loc._single_image
    loc3.gravity = lambda q: np.array([0.0, -1.0, 0.0])
    seen = []
    run = pf.run_filter
    monkeypatch.setattr(pfsl, "run_filter", lambda *a, **k: (seen.append(k["gravity_cam"]), run(*a, **k))[1])
    loc3.prepare()
    assert len(seen) == 2 and all(np.array_equal(g, [0, -1, 0]) for g in seen)
    conf2.pfsl.gravity = "sky"
    with pytest.raises(ValueError, match="pfsl.gravity"):
        pfsl.PFSLLocalizer(conf2, ds, tmp_path / "cache")


def _demo_run(semantic_demo, out, *extra, particles=200):
    """fgsn-loc localize --method pfsl on the generated street with ground-truth labels: (dataset, submission,
    results.jsonl records, cache dir)."""
    from localization import localize
    from reconstruction.datasets import load_dataset

    data, cache, labels = semantic_demo
    ds = load_dataset("cmu", data)
    overrides = [f"cache_dir={cache}", "localizer.semantics.source=labels", f"localizer.semantics.labels={labels}",
                 f"localizer.pfsl.num_particles={particles}", *extra]
    sub = localize.main(localize.build_conf("pfsl", overrides=overrides), ds, out)
    return ds, sub, [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()], cache


def test_end_to_end_on_demo(semantic_demo, tmp_path):
    """fgsn-loc localize --method pfsl on the generated street with ground-truth labels, then evaluate."""
    from evaluation import evaluate

    ds, sub, records, cache = _demo_run(semantic_demo, tmp_path / "run")
    assert sorted(r["name"] for r in records) == sorted(q.name for q in ds.queries)
    assert all(r["info"]["odometry"] == "file+noise" for r in records)  # the demo writes odometry files
    report = evaluate.main(ds, sub, tmp_path / "run")
    assert report["all"]["recall"][2] >= 75.0
    # the filter's statistics, not match counts (most frames have no 2D-3D matches)
    a, events = report["all"], [r["info"]["event"] for r in records]
    assert a["filter_tracked"] == pytest.approx(events.count("track") / len(events)) and a["filter_tracked"] > 0.5
    assert a["filter_initialised"] >= 2 and a["filter_uninitialised"] == 0  # one start per sequence at least
    assert 0 < a["median_agreement"] <= 1 and "median_matches" not in a
    assert "| tracked frames | (re)initialised |" in (tmp_path / "run" / "eval.md").read_text()
    seq_files = sorted((cache).glob("pfsl-gt-n200-*/*.json"))
    assert [p.name for p in seq_files] == ["slice2_dusk_c0.json", "slice2_night_c0.json"]
    mtimes = [p.stat().st_mtime_ns for p in seq_files]
    _, sub2, _, _ = _demo_run(semantic_demo, tmp_path / "run2")
    assert sub2.read_text() == sub.read_text() and [p.stat().st_mtime_ns for p in seq_files] == mtimes


def test_visual_odometry_on_demo(semantic_demo, tmp_path):
    """PFSL with visual odometry from the query images (no odometry file, no ground truth): every result says
    so, and the recall compares with the file odometry's."""
    from evaluation import evaluate

    ds, sub, records, _ = _demo_run(semantic_demo, tmp_path / "run", "localizer.pfsl.odometry.source=visual")
    assert all(r["info"]["odometry"] == "visual" for r in records)
    tracked = [r["info"] for r in records if r["info"]["event"] == "track"]
    assert tracked and all(i["vo_inliers"] >= 30 for i in tracked)
    assert np.mean([i["vo_scale_measured"] for i in tracked]) >= 0.5  # the map gives the scale on most frames
    report = evaluate.main(ds, sub, tmp_path / "run")
    assert report["all"]["recall"][2] >= 75.0


def test_vo_scale_from_state():
    """Known answer: VO points at unit baseline = true points / 2.5; the scale measured against the map is 2.5."""
    from localization.pfsl import vo_scale_from_state
    from reconstruction.visual_odometry import TwoViewMotion

    rng = np.random.default_rng(0)
    T = np.concatenate([np.eye(3), np.zeros((3, 1))], 1)  # camera at the origin looking along +z
    xyz = np.stack([rng.uniform(-5, 5, 400), rng.uniform(-3, 3, 400), rng.uniform(4, 30, 400)], 1)
    pts = pf.MapPoints(xyz, np.zeros(400, np.int64), np.full(400, 1.0), np.full(400, 100.0),
                       -xyz / np.linalg.norm(xyz, axis=1, keepdims=True), np.full(400, 0.5), 1)
    uv, ok = CAM.project(xyz)
    ok &= CAM.in_image(uv)
    motion = TwoViewMotion(np.eye(3), np.array([0, 0, 1.0]), xyz[ok] / 2.5, uv[ok], int(ok.sum()), int(ok.sum()))
    vis = {"distance_scale": [0.5, 1.5], "cone_margin_deg": 15.0, "min_depth_m": 0.2}
    assert vo_scale_from_state(motion, T, pts, CAM, vis) == pytest.approx(2.5, rel=1e-6)
    far = TwoViewMotion(np.eye(3), np.array([0, 0, 1.0]), xyz[ok][:5] / 2.5, uv[ok][:5] + 50, 5, 5)
    assert vo_scale_from_state(far, T, pts, CAM, vis) is None  # too few pairs


def test_vo_scale_spread_and_step_noise():
    """The scale's relative sigma from the ratios' spread (known noise), and a step's noise by hand."""
    from localization.pfsl import vo_scale_from_state, vo_step_noise
    from reconstruction.visual_odometry import TwoViewMotion

    rng = np.random.default_rng(1)
    T = np.concatenate([np.eye(3), np.zeros((3, 1))], 1)
    xyz = np.stack([rng.uniform(-5, 5, 3000), rng.uniform(-3, 3, 3000), rng.uniform(4, 30, 3000)], 1)
    pts = pf.MapPoints(xyz, np.zeros(3000, np.int64), np.full(3000, 1.0), np.full(3000, 100.0),
                       -xyz / np.linalg.norm(xyz, axis=1, keepdims=True), np.full(3000, 0.5), 1)
    uv, ok = CAM.project(xyz)
    ok &= CAM.in_image(uv)
    n = int(ok.sum())
    rel = []
    for _ in range(40):  # VO depths with 10 % relative noise: the median's relative sigma is 1.2533 x 0.1 / sqrt(n)
        vo = xyz[ok] / 2.5 / (1 + rng.normal(0, 0.1, n))[:, None]
        scale, sig = vo_scale_from_state(TwoViewMotion(np.eye(3), np.array([0, 0, 1.0]), vo, uv[ok], n, n), T, pts,
                                         CAM, {"distance_scale": [0.5, 1.5], "cone_margin_deg": 15.0,
                                               "min_depth_m": 0.2}, with_spread=True)
        rel.append((scale / 2.5 - 1, sig))
    rel = np.array(rel)
    expected = 1.2533 * 0.1 / np.sqrt(n)
    assert rel[:, 1].mean() == pytest.approx(expected, rel=0.2)
    assert rel[:, 0].std() == pytest.approx(expected, rel=0.35)  # the predicted sigma is the actual spread
    m = TwoViewMotion(np.eye(3), np.array([0, 0, 1.0]), xyz[:3], uv[:3], 3, 3, sigma_rot_rad=0.002,
                      sigma_dir_rad=0.03)
    noise = vo_step_noise(m, 1.5, 0.04, factor=2.0)
    assert noise["sigma_t_m"] == pytest.approx(2.0 * 1.5 * 0.05)  # hypot(0.04, 0.03) = 0.05
    assert noise["sigma_rot_rad"] == pytest.approx(0.004)


def test_filter_predicts_with_a_steps_own_noise(monkeypatch):
    """An odometry callable returning (increment, noise) replaces the motion model's per-metre and rotation
    sigmas for that step; motion.sigma_t_min_m is added; plain increments keep the motion model."""
    table = _cell_labels()
    pts = _map(table)
    traj = _trajectory(3)
    inc = [odometry.relative_pose(a, b) for a, b in zip(traj[:-1], traj[1:])]
    frames = [{"labels": _render(T, table), "camera": CAM, "cur_from_prev": d} for T, d in
              zip(traj, [None, lambda prev: (inc[0], {"sigma_t_m": 0.2, "sigma_rot_rad": 0.001}), inc[1]])]
    calls, predict = [], pf.predict

    def spy(R, C, d, rng, per_m, t_min, rot, *a):
        calls.append((per_m, t_min, rot))
        return predict(R, C, d, rng, per_m, t_min, rot, *a)

    monkeypatch.setattr(pf, "predict", spy)
    conf = _filter_conf()
    pf.run_filter(frames, pts, conf, np.random.default_rng(0), lambda k: (traj[k], {}))
    mc = conf["motion"]
    assert calls == [(0.0, mc["sigma_t_min_m"] + 0.2, 0.001),
                     (mc["sigma_t_per_m"], mc["sigma_t_min_m"], mc["sigma_rot_rad"])]


def test_sequences_on_two_workers_equal_serial(semantic_demo, tmp_path):
    """One task per sequence on a 2-worker Dask engine: the same sequence files and submission as serially."""
    import shutil

    _, serial, _, cache = _demo_run(semantic_demo, tmp_path / "serial", particles=120)
    seq_dir = next(cache.glob("pfsl-gt-n120-*"))
    files = {p.name: p.read_bytes() for p in seq_dir.glob("*.json")}
    shutil.rmtree(seq_dir)
    _, par, _, _ = _demo_run(semantic_demo, tmp_path / "dask", "workers=2", particles=120)
    assert {p.name: p.read_bytes() for p in seq_dir.glob("*.json")} == files and len(files) == 2
    assert par.read_bytes() == serial.read_bytes()


def test_database_initialisation_on_demo(semantic_demo, tmp_path):
    """init.method=database: the filter starts from the map's database poses (no 2D-3D match): every frame's
    init says so, no match is counted, and the street is localized (recall printed for the README's table)."""
    from evaluation import evaluate

    ds, sub, records, _ = _demo_run(semantic_demo, tmp_path / "run", "localizer.pfsl.init.method=database",
                                    particles=500)
    inits = [r["info"]["init_info"] for r in records if "init_info" in r["info"]]
    assert inits and all(i["init"] == "database" and i["num_poses"] > 5 for i in inits)
    assert all(r["num_matches"] == 0 for r in records)
    report = evaluate.main(ds, sub, tmp_path / "run")
    print("database init recall", report["all"]["recall"])
    assert report["all"]["recall"][2] >= 50.0


def test_init_particles_around_a_pose_set():
    rng = np.random.default_rng(0)
    poses = np.array([np.concatenate([np.eye(3), -np.array([[x], [0.0], [0.0]])], 1) for x in (0.0, 10.0, 20.0)])
    R, C = pf.init_particles(poses, 3000, rng, 0.1, 0.01)
    assert R.shape == (3000, 3, 3) and C.shape == (3000, 3)
    nearest = np.abs(C[:, :1] - np.array([[0.0, 10.0, 20.0]])).min(1)
    assert nearest.max() < 1.0  # every particle near one of the poses
    counts = np.bincount(np.abs(C[:, :1] - np.array([[0.0, 10.0, 20.0]])).argmin(1), minlength=3)
    assert counts.min() > 900  # drawn uniformly over the set
