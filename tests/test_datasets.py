"""Readers on the real seasons-mini data (skipped when ../shared/data is absent) and on malformed copies."""
import shutil

import numpy as np
import pytest

from reconstruction.datasets import load_cmu, load_robotcar, read_pose_file

from reconstruction.records import DatasetError
from reconstruction.camera import from_colmap_pixels
from reconstruction.sfm_map import load_reconstruction


def _reprojection_errors(dataset, map_id, max_points=300):
    """Median reprojection error (px) of model observations under the dataset's ground-truth database poses."""
    rec = load_reconstruction(dataset, map_id)
    by_name = {r.key: r for r in dataset.database} | {r.name: r for r in dataset.database}
    errs = []
    for pid in list(rec.points3D.keys())[:max_points]:
        p = rec.points3D[pid]
        for el in p.track.elements:
            image = rec.images[el.image_id]
            r = by_name[image.name]
            cam = r.camera.to_pycolmap()
            Xc = r.cam_from_world[:, :3] @ p.xyz + r.cam_from_world[:, 3]
            uv = from_colmap_pixels(cam.img_from_cam(Xc[None]))[0]
            errs.append(np.linalg.norm(uv - from_colmap_pixels(image.points2D[el.point2D_idx].xy)))
    return float(np.median(errs))


class TestCMU:
    def test_layout(self, seasons_cmu):
        ds = load_cmu(seasons_cmu, [1, 2])
        assert len(ds.database) == 37 and len(ds.queries) == 72
        conds = {q.condition for q in ds.queries}
        assert conds == {"autumn", "dusk", "night", "snow"}
        assert all(sum(q.condition == c for q in ds.queries) == 18 for c in conds)
        assert all(q.cam_from_world is not None for q in ds.queries)
        assert {q.groups for q in ds.queries} == {("other",), ("urban",)}  # slice 1 is outside the real groups
        q = ds.queries[0]
        assert q.camera.model == "OPENCV" and q.camera_id == "c0" and q.path.is_file()
        assert q.timestamp_s == pytest.approx(int(q.name.split("_")[3][:-6]) * 1e-6)

    def test_gt_is_consistent_with_model(self, seasons_cmu):
        ds = load_cmu(seasons_cmu, [1])
        assert _reprojection_errors(ds, "slice1") < 1.0

    def _copy(self, seasons_cmu, tmp_path):
        root = tmp_path / "cmu"
        (root / "slice1").mkdir(parents=True)
        shutil.copy(seasons_cmu / "intrinsics.txt", root)
        for sub in ("ground-truth-database-images-slice1.txt", "test-images-slice1.txt", "camera-poses", "query"):
            src = seasons_cmu / "slice1" / sub
            (shutil.copytree if src.is_dir() else shutil.copy)(src, root / "slice1" / sub)
        return root

    def test_gt_line_with_7_numbers(self, seasons_cmu, tmp_path):
        root = self._copy(seasons_cmu, tmp_path)
        f = root / "slice1" / "ground-truth-database-images-slice1.txt"
        lines = f.read_text().splitlines()
        lines[2] = " ".join(lines[2].split()[:-1])
        f.write_text("\n".join(lines))
        with pytest.raises(DatasetError, match=r"ground-truth-database-images-slice1.txt:3: .*got 6 numbers"):
            load_cmu(root)
        with pytest.raises(DatasetError, match="7 numbers"):
            f.write_text("img_00001_c0_1us.jpg 1 0 0 0 1 2 3 4\n")
            read_pose_file(f)

    def test_empty_query_list(self, seasons_cmu, tmp_path):
        root = self._copy(seasons_cmu, tmp_path)
        (root / "slice1" / "test-images-slice1.txt").write_text("")
        with pytest.raises(DatasetError, match="test-images-slice1.txt: empty query list"):
            load_cmu(root)

    def test_missing_query_image(self, seasons_cmu, tmp_path):
        root = self._copy(seasons_cmu, tmp_path)
        name = (root / "slice1" / "test-images-slice1.txt").read_text().split()[0]
        (root / "slice1" / "query" / name).unlink()
        with pytest.raises(DatasetError, match=f"query image {name} not found"):
            load_cmu(root)

    def test_missing_model_file(self, seasons_cmu, tmp_path):
        root = self._copy(seasons_cmu, tmp_path)
        shutil.copytree(seasons_cmu / "slice1" / "sparse", root / "slice1" / "sparse")
        (root / "slice1" / "sparse" / "points3D.bin").unlink()
        ds = load_cmu(root)
        with pytest.raises(DatasetError, match=r"sparse: model file points3D.bin \(or .txt\) is missing"):
            load_reconstruction(ds, "slice1")
        shutil.rmtree(root / "slice1" / "sparse")
        with pytest.raises(DatasetError, match="build-map"):
            load_reconstruction(ds, "slice1")


class TestRobotCar:
    @pytest.mark.parametrize("scene", ["castle-P30", "Herz-Jesus-P25"])
    def test_layout_and_nvm(self, seasons_robotcar, scene):
        ds = load_robotcar(seasons_robotcar / scene)
        assert ds.database and all(d.condition == "overcast-reference" for d in ds.database)
        assert {q.condition for q in ds.queries} == {"dusk", "sun", "night", "snow"}
        assert all(q.name.startswith("rear/") and q.name.endswith(".jpg") for q in ds.queries)
        assert {q.groups for q in ds.queries if q.condition == "night"} == {("night",)}
        assert {q.groups for q in ds.queries if q.condition != "night"} == {("day",)}
        np.testing.assert_array_equal(ds.up, [0, 0, -1])  # Strecha's world frame: z points down
        n_gt = sum(q.cam_from_world is not None for q in ds.queries)
        n_train = len((seasons_robotcar / scene / "robotcar_v2_train.txt").read_text().split("\n")) - 1
        assert n_gt == n_train and 0 < n_gt < len(ds.queries)
        np.testing.assert_allclose(ds.rig_from_cam["rear"], np.eye(3, 4))
        # NVM measurements relative to the image centre, .png names for .jpg files
        assert _reprojection_errors(ds, "all-merged") < 1.0

    def test_multi_model_nvm_needs_a_choice(self, seasons_robotcar, tmp_path):
        """A multi-model NVM file: a one-line error unless nvm_model chooses; the choice reaches the map reader."""
        root = tmp_path / "rc"
        shutil.copytree(seasons_robotcar / "castle-P30", root)
        f = root / "3D-models" / "all-merged" / "all.nvm"
        text = f.read_text().rstrip()
        assert text.endswith("\n0")  # the end-of-models line; a second model goes before it
        f.write_text(text[:-1] + "1\n./x.png 1 1 0 0 0 0 0 0 0 0\n1\n1 2 3 4 5 6 1 0 0 0.5 0.5\n0\n")
        with pytest.raises(DatasetError, match="all.nvm: the file holds 2 models"):
            load_robotcar(root)
        ds = load_robotcar(root, nvm_model=0)
        assert ds.database and ds.maps["all-merged"].model == 0
        assert len(load_reconstruction(ds, "all-merged").points3D) > 0

    def test_malformed_train_line(self, seasons_robotcar, tmp_path):
        root = tmp_path / "rc"
        shutil.copytree(seasons_robotcar / "castle-P30", root)
        f = root / "robotcar_v2_train.txt"
        f.write_text(f.read_text().replace(" 1.000000000\n", "\n", 1))
        with pytest.raises(DatasetError, match=r"robotcar_v2_train.txt:1: expected name \+ 16 numbers"):
            load_robotcar(root)
