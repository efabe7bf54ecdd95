"""Tests of the synthetic demo dataset generator (reconstruction.synthetic).

One small dataset is generated once per module (default 640x480 camera, few frames) and checked for layout,
formats, geometric correctness (known answers from the analytic scene), correspondence consistency,
determinism, and that SIFT finds and matches features across a condition change.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import h5py
import numpy as np
import pycolmap
import pytest

from fgsn.utils.config import merge_config
from reconstruction import synthetic as S
from reconstruction.geometry import camera_center, compose, pose_from_qvec_center, qvec_to_rotmat

NAME = re.compile(r"^img_(\d{5})_c0_(\d+)us\.jpg$")
SMALL = [
    "trajectory.n_database=6",
    "trajectory.n_queries=3",
    "conditions=[dusk,night]",
    "correspondence.n_pairs=1",
    "correspondence.n_points=600",
]


def _conf(overrides):
    return merge_config(S.default_conf, overrides=overrides)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    conf = _conf(SMALL)
    S.main(conf, root)
    return root, conf


def _read_poses(path: Path) -> dict:
    poses = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        assert len(parts) == 8, line
        q = np.array([float(v) for v in parts[1:5]])
        assert abs(np.linalg.norm(q) - 1) < 1e-6
        poses[parts[0]] = pose_from_qvec_center(q, np.array([float(v) for v in parts[5:8]]))
    return poses


def _read_camera(root: Path) -> pycolmap.Camera:
    lines = [ln for ln in (root / "intrinsics.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1
    p = lines[0].split()
    assert p[0] == "c0" and p[1] == "OPENCV" and len(p) == 12
    return pycolmap.Camera(model="OPENCV", width=int(p[2]), height=int(p[3]), params=[float(v) for v in p[4:]])


def _backproject(cam: pycolmap.Camera, T: np.ndarray, xy: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Project pixels (integer = pixel centre) with z-depths to world points via pycolmap's undistortion."""
    xn = cam.cam_from_img(xy + 0.5)  # COLMAP pixel convention at the boundary
    p_cam = np.concatenate([xn, np.ones((len(xn), 1))], axis=1) * depth[:, None]
    return (p_cam - T[:, 3]) @ T[:, :3]


class TestLayout:
    def test_files_and_formats(self, dataset):
        root, conf = dataset
        cam = _read_camera(root)
        assert (cam.width, cam.height) == (640, 480)
        assert cam.params[4] == pytest.approx(-0.05)
        s = root / "slice2"
        db = _read_poses(s / "ground-truth-database-images-slice2.txt")
        assert len(db) == 6 and sorted(p.name for p in (s / "database").iterdir()) == sorted(db)
        queries = {}
        for cond in ("dusk", "night"):
            q = _read_poses(s / "camera-poses" / f"slice-2-gt-query-images-{cond}.txt")
            assert len(q) == 3
            queries.update(q)
        assert sorted(p.name for p in (s / "query").iterdir()) == sorted(queries)
        assert sorted((s / "test-images-slice2.txt").read_text().split()) == sorted(queries)
        numbers = [int(NAME.match(n).group(1)) for n in [*db, *queries]]
        assert sorted(numbers) == list(range(1, 13))  # unique running numbers
        assert not (s / "sparse").exists()
        for split, names in (("database", db), ("query", queries)):
            for n in names:
                img = cv2.imread(str(s / split / n))
                assert img.shape == (480, 640, 3)
                lab = cv2.imread(str(s / "semantics" / split / (Path(n).stem + ".png")), cv2.IMREAD_UNCHANGED)
                assert lab.dtype == np.uint8 and lab.shape == (480, 640)
                assert lab.max() <= max(S.CLASSES) and {0, 1, 3}.issubset(set(np.unique(lab)))

    def test_camera_height_and_up(self, dataset):
        root, _ = dataset
        db = _read_poses(root / "slice2" / "ground-truth-database-images-slice2.txt")
        for T in db.values():
            assert 1.5 < camera_center(T)[2] < 2.5
            down = T[:, :3] @ np.array([0, 0, -1.0])  # world down in the camera frame ~ +y (image down)
            assert down[1] > 0.99

    def test_odometry_is_exact(self, dataset):
        root, _ = dataset
        s = root / "slice2"
        for cond, gt_file in (("database", "ground-truth-database-images-slice2.txt"),
                              ("dusk", "camera-poses/slice-2-gt-query-images-dusk.txt")):
            gt = _read_poses(s / gt_file)
            lines = [ln.split() for ln in (s / "odometry" / f"{cond}.txt").read_text().splitlines()
                     if ln and not ln.startswith("#")]
            assert len(lines) == len(gt) - 1
            for p in lines:
                rel = np.concatenate([qvec_to_rotmat(np.array([float(v) for v in p[2:6]])),
                                      np.array([float(v) for v in p[6:9]])[:, None]], axis=1)
                np.testing.assert_allclose(compose(rel, gt[p[0]]), gt[p[1]], atol=1e-7)


class TestGeometry:
    def test_rendered_depth_known_answer(self, dataset):
        """Road pixels back-projected with the written pose/intrinsics lie on z = 0; facade pixels on their
        building front plane; the written class map equals the re-rendered one."""
        root, conf = dataset
        cam = _read_camera(root)
        db = _read_poses(root / "slice2" / "ground-truth-database-images-slice2.txt")
        name, T = sorted(db.items())[2]
        plan, scene = S.slice_scene(conf, 2)
        geo = S.render_geometry(scene, S.SynthCamera.from_conf(conf.camera), T)
        lab = cv2.imread(str(root / "slice2" / "semantics" / "database" / (Path(name).stem + ".png")), cv2.IMREAD_UNCHANGED)
        rng = np.random.default_rng(0)
        # ground: analytic ray-plane intersection from pycolmap's undistortion
        ys, xs = np.nonzero(lab == 1)
        sel = rng.choice(len(xs), 200, replace=False)
        xy = np.stack([xs[sel], ys[sel]], 1).astype(np.float64)
        X = _backproject(cam, T, xy, geo["depth"][ys[sel], xs[sel]])
        np.testing.assert_allclose(X[:, 2], 0.0, atol=1e-6)
        assert np.all(np.abs(X[:, 1]) < conf.scene.road_width_m / 2 + 1e-6)
        # facades: on the plane of their face, inside its bounds
        ys, xs = np.nonzero(np.isin(lab, [3, 4, 5]))
        sel = rng.choice(len(xs), 200, replace=False)
        xy = np.stack([xs[sel], ys[sel]], 1).astype(np.float64)
        X = _backproject(cam, T, xy, geo["depth"][ys[sel], xs[sel]])
        for x, fi in zip(X, geo["face"][ys[sel], xs[sel]]):
            f = scene.faces[fi]
            assert f.kind in ("facade", "wall")
            assert abs(x[f.axis] - f.plane) < 1e-6
            for k, (lo, hi) in f.bounds.items():
                assert lo - 1e-6 <= x[k] <= hi + 1e-6
        r = S.render_view(scene, S.SynthCamera.from_conf(conf.camera), T, "reference")
        np.testing.assert_array_equal(r["labels"], lab)

    def test_projection_round_trip(self, dataset):
        root, conf = dataset
        cam = S.SynthCamera.from_conf(conf.camera)
        pc = _read_camera(root)
        xy = np.random.default_rng(1).uniform([0, 0], [639, 479], size=(100, 2))
        xn = pc.cam_from_img(xy + 0.5)
        uv, ok = cam.project(np.concatenate([xn, np.ones((100, 1))], 1) * 7.0)
        assert ok.all()
        np.testing.assert_allclose(uv, xy, atol=1e-6)

    def test_correspondences_reproject_from_one_point(self, dataset):
        root, conf = dataset
        cam = _read_camera(root)
        db = _read_poses(root / "slice2" / "ground-truth-database-images-slice2.txt")
        files = sorted((root / "correspondence" / "slice2" / "correspondence_data").glob("*.mat"))
        assert len(files) == 2
        for path in files:
            m = re.match(r"correspondence_slice2_runref_run(\w+)_c(\d+)_c(\d+)\.mat$", path.name)
            assert m and m.group(1) in ("dusk", "night")
            with h5py.File(path, "r") as f:
                im_i = "".join(map(chr, f["im_i_path"][:, 0]))
                im_j = "".join(map(chr, f["im_j_path"][:, 0]))
                assert f["im_i_path"].dtype == np.uint16 and f["im_i_path"].shape[1] == 1
                pt_i, pt_j = f["pt_i"][()], f["pt_j"][()]
                assert pt_i.dtype == np.float64 and pt_i.shape[1] == 2 and f["dist_from_center"].shape == (len(pt_i), 1)
            assert im_i.startswith("slice2/reference/") and im_j.startswith(f"slice2/{m.group(1)}/")
            for rel in (im_i, im_j):
                assert (root / "correspondence" / "slice2" / "images" / rel).is_file()
            assert len(pt_i) > 200
            names = sorted(db)
            Ti, Tj = db[Path(im_i).name], db[Path(im_j).name]
            assert names.index(Path(im_i).name) == int(m.group(2)) and names.index(Path(im_j).name) == int(m.group(3))
            xi, xj = cam.cam_from_img(pt_i + 0.5), cam.cam_from_img(pt_j + 0.5)
            if np.allclose(Ti, Tj):
                np.testing.assert_allclose(pt_i, pt_j, atol=1e-6)
                continue
            # triangulate each pair (DLT) and reproject into both views
            Pi, Pj = Ti, Tj
            A = np.stack([xi[:, :1] * Pi[2] - Pi[0], xi[:, 1:] * Pi[2] - Pi[1],
                          xj[:, :1] * Pj[2] - Pj[0], xj[:, 1:] * Pj[2] - Pj[1]], axis=1)  # (N, 4, 4)
            X = np.linalg.svd(A)[2][:, -1]
            X = X[:, :3] / X[:, 3:]
            for T, pts in ((Ti, pt_i), (Tj, pt_j)):
                pc = X @ T[:, :3].T + T[:, 3]
                assert np.all(pc[:, 2] > 0)
                proj = np.asarray(cam.img_from_cam(pc)) - 0.5
                err = np.linalg.norm(proj - pts, axis=1)
                assert np.median(err) < 0.01 and np.percentile(err, 99) < 0.1


class TestDeterminism:
    def test_same_seed_same_files(self, tmp_path):
        from evaluation.cli import main as cli_main

        over = ["camera.width=160", "camera.height=120", "camera.fx=125", "camera.fy=125", "trajectory.n_database=3",
                "trajectory.n_queries=2", "conditions=[snow]", "correspondence.n_pairs=1"]
        a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
        assert cli_main(["generate-demo", "--out", str(a), *over]) == 0
        S.main(_conf(over), b)
        S.main(_conf([*over, "seed=1"]), c)
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "log.txt")
        assert len(files) > 15
        for rel in files:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        # resume: a second run keeps the existing images (no re-rendering) and leaves every file identical
        mtimes = {rel: (b / rel).stat().st_mtime_ns for rel in files if rel.suffix in (".jpg", ".png", ".mat")}
        S.main(_conf(over), b)
        assert all((b / rel).stat().st_mtime_ns == t for rel, t in mtimes.items())
        for rel in files:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        img_a = sorted((a / "slice2" / "database").iterdir())[0]
        img_c = sorted((c / "slice2" / "database").iterdir())[0]
        assert not np.array_equal(cv2.imread(str(img_a)), cv2.imread(str(img_c)))

    def test_unknown_key_and_condition(self, tmp_path):
        with pytest.raises(ValueError):
            _conf(["trajectory.n_databse=3"])
        with pytest.raises(ValueError):
            S.main(_conf(["conditions=[fog]"]), tmp_path)


class TestFeatures:
    def test_sift_keypoints(self, dataset):
        root, _ = dataset
        img = cv2.imread(str(sorted((root / "slice2" / "database").iterdir())[0]), cv2.IMREAD_GRAYSCALE)
        assert len(cv2.SIFT_create().detect(img)) > 500

    def test_sift_matches_database_to_dusk(self, dataset):
        root, _ = dataset
        s = root / "slice2"
        db = _read_poses(s / "ground-truth-database-images-slice2.txt")
        q = _read_poses(s / "camera-poses" / "slice-2-gt-query-images-dusk.txt")
        qname, Tq = sorted(q.items())[1]
        dname = min(db, key=lambda n: np.linalg.norm(camera_center(db[n]) - camera_center(Tq)))
        sift = cv2.SIFT_create()
        k1, d1 = sift.detectAndCompute(cv2.imread(str(s / "database" / dname), cv2.IMREAD_GRAYSCALE), None)
        k2, d2 = sift.detectAndCompute(cv2.imread(str(s / "query" / qname), cv2.IMREAD_GRAYSCALE), None)
        pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1, d2, k=2)
        good = [m for m, n in pairs if m.distance < 0.8 * n.distance]
        assert len(good) > 100
        p1 = np.float32([k1[m.queryIdx].pt for m in good])
        p2 = np.float32([k2[m.trainIdx].pt for m in good])
        _, inl = cv2.findFundamentalMat(p1, p2, cv2.FM_RANSAC, 1.5, 0.999)
        assert inl.mean() > 0.5


class TestPackage:
    ORDER = ("camera", "textures", "scene", "render", "conditions", "trajectory", "writers")

    def test_public_names(self):
        """The entry points of the former single module stay importable from the package."""
        for name in ("main", "default_conf", "add_arguments", "run", "CLASSES", "CONDITIONS", "SynthCamera",
                     "Scene", "Face", "build_scene", "render_geometry", "render_view", "make_trajectory",
                     "correspondences", "plan_slice", "slice_scene"):
            assert hasattr(S, name), name
        assert callable(S.main) and callable(S.run) and callable(S.add_arguments)
        assert set(S.__all__) <= set(dir(S))

    def test_modules_import_downwards_only(self):
        """Each module imports only modules before it in ``ORDER`` (no cycles), and none the package itself."""
        import ast

        pkg = Path(S.__file__).parent
        assert sorted(p.stem for p in pkg.glob("*.py") if p.stem != "__init__") == sorted(self.ORDER)
        for k, name in enumerate(self.ORDER):
            tree = ast.parse((pkg / f"{name}.py").read_text())
            assert ast.get_docstring(tree), name
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 1:
                    assert node.module in self.ORDER[:k], (name, node.module)


def test_sky_sampling_beyond_remap_limit():
    """A view with more sky pixels than cv2.remap's 32,767-pixel output side (a long street's open end) samples
    the panorama like a one-row remap of the same points."""
    from reconstruction.synthetic.conditions import _sample

    rng = np.random.default_rng(3)
    sky = rng.random((256, 1024)).astype(np.float32)
    x = (rng.random(70_001) * 1023).astype(np.float32)
    y = (rng.random(70_001) * 255).astype(np.float32)
    got = _sample(sky, x, y)
    assert got.shape == (70_001,)
    for sl in (slice(0, 30_000), slice(30_000, 60_000), slice(60_000, None)):
        ref = cv2.remap(sky, x[None, sl], y[None, sl], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)[0]
        np.testing.assert_array_equal(got[sl], ref)


def test_parallel_generation_equals_serial(tmp_path):
    """Images rendered on a 2-worker engine (each worker builds the scene from the seed) are the serial files."""
    from fgsn.utils.parallel import Engine

    conf = merge_config(S.default_conf, overrides=["trajectory.n_database=5", "trajectory.n_queries=2",
                                                   "conditions=[snow,night]", "write_correspondences=false"])
    S.main(conf, tmp_path / "serial")
    with Engine(workers=2) as engine:
        S.main(conf, tmp_path / "parallel", engine=engine)
    files = sorted(p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial").rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".jpg"]) == 9 and len([f for f in files if f.suffix == ".png"]) == 9
    for f in files:
        assert (tmp_path / "parallel" / f).read_bytes() == (tmp_path / "serial" / f).read_bytes(), f
    assert not list((tmp_path / "parallel").rglob("*.tmp"))
