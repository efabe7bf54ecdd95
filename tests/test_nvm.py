"""The streaming NVM_V3 reader: known answers on a small written file, errors naming the line, the real models."""
from __future__ import annotations

import numpy as np
import pytest

from reconstruction import nvm
from reconstruction.camera import Camera
from reconstruction.geometry import pose_from_qvec_center
from reconstruction.records import DatasetError

CAMERA = Camera("PINHOLE", 640, 480, (500.0, 500.0, 320.0, 240.0))
CAM_LINES = [
    "./overcast-reference/rear/100.png 500.0 1 0 0 0 0 0 0 0 0",
    "./overcast-reference/rear/200.png 500.0 0.5 0.5 0.5 0.5 1.5 -2 3 0 0",
]
POINT_LINES = [
    "1.0 2.0 3.0 255 128 0 2 0 7 10.5 -20.25 1 8 -1.5 2.5",
    "4 5 6 1 2 3 1 1 9 0.125 0.0",
    "-7.5 8 9.25 10.9 20 30 3 1 3 3.0 4.0 0 4 5.0 6.0 1 5 7.0 8.0",
]


def _write(tmp_path, cams=CAM_LINES, points=POINT_LINES, n_cams=None, n_pts=None, tail=""):
    lines = ["NVM_V3", "", str(len(cams) if n_cams is None else n_cams), *cams, "",
             str(len(points) if n_pts is None else n_pts), *points]
    path = tmp_path / "all.nvm"
    path.write_text("\n".join(lines) + "\n" + tail)
    return path


def _camera_of(key):
    return f"images/{key}.jpg", CAMERA


class TestReadNvmArrays:
    def test_known_answer(self, tmp_path):
        m = nvm.read_nvm_arrays(_write(tmp_path))
        assert m.cameras.names == ["./overcast-reference/rear/100.png", "./overcast-reference/rear/200.png"]
        np.testing.assert_array_equal(m.cameras.focal, [500.0, 500.0])
        np.testing.assert_array_equal(m.cameras.cam_from_world[0], np.eye(3, 4))
        np.testing.assert_array_equal(m.cameras.cam_from_world[1],
                                      pose_from_qvec_center(np.array([0.5] * 4), np.array([1.5, -2, 3])))
        np.testing.assert_array_equal(m.xyz, [[1, 2, 3], [4, 5, 6], [-7.5, 8, 9.25]])
        assert m.rgb.dtype == np.uint8
        np.testing.assert_array_equal(m.rgb, [[255, 128, 0], [1, 2, 3], [10, 20, 30]])  # 10.9 truncated
        np.testing.assert_array_equal(m.track_length, [2, 1, 3])
        np.testing.assert_array_equal(m.track_start, [0, 2, 3])
        np.testing.assert_array_equal(m.image_idx, [0, 1, 1, 1, 0, 1])
        np.testing.assert_array_equal(m.feature_idx, [7, 8, 9, 3, 4, 5])
        np.testing.assert_array_equal(m.xy, [[10.5, -20.25], [-1.5, 2.5], [0.125, 0], [3, 4], [5, 6], [7, 8]])

    def test_chunks_do_not_change_the_result(self, tmp_path, monkeypatch):
        path = _write(tmp_path)
        ref = nvm.read_nvm_arrays(path)
        monkeypatch.setattr(nvm, "_CHUNK_LINES", 2)
        m = nvm.read_nvm_arrays(path)
        for field in ("xyz", "rgb", "track_length", "image_idx", "feature_idx", "xy"):
            np.testing.assert_array_equal(getattr(m, field), getattr(ref, field))

    def test_empty_points_and_empty_tracks(self, tmp_path):
        m = nvm.read_nvm_arrays(_write(tmp_path, points=[]))
        assert m.xyz.shape == (0, 3) and m.rgb.shape == (0, 3) and m.xy.shape == (0, 2)
        m = nvm.read_nvm_arrays(_write(tmp_path, points=["1 2 3 4 5 6 0"]))
        np.testing.assert_array_equal(m.track_length, [0])
        assert m.image_idx.shape == (0,)

    def test_multi_model_file(self, tmp_path):
        """VisualSfM multi-model file: an error unless a model is chosen; the chosen one is read."""
        second = "\n1\nsecond.png 1 1 0 0 0 0 0 0 0 0\n1\n1 2 3 4 5 6 1 0 0 0.5 0.5\n0\n"
        path = _write(tmp_path, tail=second)
        with pytest.raises(DatasetError, match="more than one model"):
            nvm.read_nvm_arrays(path)
        m = nvm.read_nvm_arrays(path, model=0)
        assert len(m.cameras.names) == 2 and len(m.xyz) == 3
        m1 = nvm.read_nvm_arrays(path, model=1)
        assert m1.cameras.names == ["second.png"] and len(m1.xyz) == 1 and m1.image_idx.tolist() == [0]
        assert list(nvm.read_nvm_poses(path, model=1)) == ["second"]
        with pytest.raises(DatasetError, match="model 2"):
            nvm.read_nvm_arrays(path, model=2)
        single = nvm.read_nvm_arrays(_write(tmp_path, tail="\n0\n"))  # one model and the end marker: fine
        assert len(single.xyz) == 3

    def test_poses_of_a_multi_model_file_need_a_choice(self, tmp_path):
        """read_nvm_poses never returns the first of several models silently (it used to default to model 0)."""
        second = "\n1\nsecond.png 1 1 0 0 0 0 0 0 0 0\n1\n1 2 3 4 5 6 1 0 0 0.5 0.5\n0\n"
        path = _write(tmp_path, tail=second)
        assert nvm.count_models(path) == 2
        with pytest.raises(DatasetError, match="all.nvm: the file holds 2 models: choose one with model=K"):
            nvm.read_nvm_poses(path)
        assert len(nvm.read_nvm_poses(path, model=0)) == 2
        path = _write(tmp_path, tail="\n0\n#the last part of NVM file points to the PLY files\n0\n")
        assert nvm.count_models(path) == 1 and len(nvm.read_nvm_poses(path)) == 2
        assert nvm.count_models(_write(tmp_path, points=[])) == 1

    def test_poses_read_only_the_cameras(self, tmp_path):
        path = _write(tmp_path, points=["garbage"])
        poses = nvm.read_nvm_poses(path)
        assert list(poses) == ["overcast-reference/rear/100", "overcast-reference/rear/200"]
        np.testing.assert_array_equal(poses["overcast-reference/rear/100"], np.eye(3, 4))


class TestErrors:
    @pytest.mark.parametrize("kwargs, match", [
        ({"cams": ["a.png 1 2 3"]}, r"all.nvm:4: camera line needs"),
        ({"cams": [CAM_LINES[0], "b.png 1 x 0 0 0 0 0 0 0 0"]}, r"all.nvm:5: non-numeric camera values"),
        ({"cams": CAM_LINES[:1], "n_cams": 2, "points": []}, r"all.nvm:\d+: camera line needs"),
        ({"n_pts": 4}, r"all.nvm:10: file ends after 3 points, header announces 4"),
        ({"points": POINT_LINES[:1] + ["1 2 3 4 5 6 2 0 1 2.0 3.0"]}, r"all.nvm:9: malformed point line"),
        ({"points": POINT_LINES[:2] + ["1 2 3 4 5"]}, r"all.nvm:10: malformed point line"),
        ({"points": ["1 2 3 4 5 6 1 0 1 2.0 abc"]}, r"all.nvm:8: malformed point line \(non-numeric value\)"),
        ({"points": POINT_LINES[:1] + ["1 2 3 4 5 6 1 2 1 2.0 3.0"]},
         r"all.nvm:9: point observed in unknown image index 2"),
        ({"points": ["1 2 3 4 5 300 1 0 1 2.0 3.0"]}, r"all.nvm:8: malformed point line \(colour"),
        ({"points": ["1 2 3 4 5 6 -1"]}, r"all.nvm:8: malformed point line"),
    ])
    def test_names_file_and_line(self, tmp_path, monkeypatch, kwargs, match):
        path = _write(tmp_path, **kwargs)
        with pytest.raises(DatasetError, match=match):
            nvm.read_nvm_arrays(path)
        monkeypatch.setattr(nvm, "_CHUNK_LINES", 1)  # the line is found in any chunk
        with pytest.raises(DatasetError, match=match):
            nvm.read_nvm_arrays(path)

    def test_truncated_camera_block(self, tmp_path):
        path = tmp_path / "all.nvm"
        path.write_text("NVM_V3\n3\n" + CAM_LINES[0] + "\n")
        with pytest.raises(DatasetError, match=r"all.nvm:3: file ends after 1 cameras, header announces 3"):
            nvm.read_nvm_poses(path)
        path.write_text("NVM_V3\n100000000000000\n" + CAM_LINES[0] + "\n")  # a corrupt count allocates nothing
        with pytest.raises(DatasetError, match=r"all.nvm:3: file ends after 1 cameras, header announces 10+"):
            nvm.read_nvm_poses(path)

    @pytest.mark.parametrize("text, match", [("", "not an NVM_V3 file"), ("NVM_V2\n", "not an NVM_V3 file"),
                                             ("NVM_V3\n", r"all.nvm:1: file ends before the number of cameras"),
                                             ("NVM_V3\nx\n", r"all.nvm:2: expected the number of cameras")])
    def test_header(self, tmp_path, text, match):
        path = tmp_path / "all.nvm"
        path.write_text(text)
        with pytest.raises(DatasetError, match=match):
            nvm.read_nvm_arrays(path)

    def test_missing_file(self, tmp_path):
        with pytest.raises(DatasetError, match="NVM model file not found"):
            nvm.read_nvm_poses(tmp_path / "none.nvm")


class TestReadNvm:
    def test_known_answer(self, tmp_path):
        rec = nvm.read_nvm(_write(tmp_path), _camera_of)
        assert sorted(rec.images) == [1, 2] and sorted(rec.points3D) == [1, 2, 3] and len(rec.cameras) == 1
        im1, im2 = rec.images[1], rec.images[2]
        assert im1.name == "images/overcast-reference/rear/100.jpg" and im1.camera_id == 1
        np.testing.assert_allclose(im2.cam_from_world().matrix(),
                                   pose_from_qvec_center(np.array([0.5] * 4), np.array([1.5, -2, 3])), atol=1e-12)
        # measurements relative to the image centre (320, 240), COLMAP convention kept
        np.testing.assert_array_equal([p.xy for p in im1.points2D], [[330.5, 219.75], [325, 246]])
        np.testing.assert_array_equal([p.xy for p in im2.points2D], [[318.5, 242.5], [320.125, 240], [323, 244],
                                                                     [327, 248]])
        tracks = {pid: sorted((e.image_id, e.point2D_idx) for e in p.track.elements) for pid, p in
                  rec.points3D.items()}
        assert tracks == {1: [(1, 0), (2, 0)], 2: [(2, 1)], 3: [(1, 1), (2, 2), (2, 3)]}
        np.testing.assert_array_equal(rec.points3D[3].xyz, [-7.5, 8, 9.25])
        np.testing.assert_array_equal(rec.points3D[1].color, [255, 128, 0])
        assert [p.point3D_id for p in im2.points2D] == [1, 2, 3, 3]

    def test_chunked_tracks(self, tmp_path, monkeypatch):
        monkeypatch.setattr(nvm, "_TRACK_CHUNK", 2)
        rec = nvm.read_nvm(_write(tmp_path), _camera_of)
        assert {pid: p.track.length() for pid, p in rec.points3D.items()} == {1: 2, 2: 1, 3: 3}


@pytest.mark.parametrize("scene, n_images, n_points, n_obs", [("castle-P30", 20, 7926, 32598),
                                                              ("Herz-Jesus-P25", 17, 9276, 43773)])
def test_real_model(seasons_robotcar, scene, n_images, n_points, n_obs):
    path = seasons_robotcar / scene / "3D-models" / "all-merged" / "all.nvm"
    m = nvm.read_nvm_arrays(path)
    assert len(m.cameras.names) == n_images and len(m.xyz) == n_points
    assert int(m.track_length.sum()) == n_obs  # counted independently (awk)
    assert m.image_idx.shape == m.feature_idx.shape == (n_obs,) == m.xy.shape[:1]
    assert set(nvm.read_nvm_poses(path)) == {nvm._key(n) for n in m.cameras.names}
    if scene == "castle-P30":  # the last point line of the file, as written
        np.testing.assert_array_equal(m.xyz[-1], [6.442883629, -12.480861110, 1.309260026])
        np.testing.assert_array_equal(m.rgb[-1], [49, 62, 100])
        np.testing.assert_array_equal(m.track_length[-1], 4)
        np.testing.assert_array_equal(m.image_idx[-4:], [7, 6, 9, 5])
        np.testing.assert_array_equal(m.xy[-1], [-318.227, -41.574])
        assert m.cameras.names[0] == "./overcast-reference/rear/1283343066001998.png"
        np.testing.assert_array_equal(m.cameras.focal[0], 919.826667)
