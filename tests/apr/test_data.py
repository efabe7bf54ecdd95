"""Readers for 7-Scenes, Cambridge Landmarks and Seasons layouts; statistics, windows and the torch dataset."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from localization.apr.data import (APRDataset, PoseRecord, PoseStats, make_windows, mean_pose, read_7scenes,
                                   read_cambridge, read_split)
from localization.apr.pose import pose_to_cam_from_world
from localization.apr.train import default_conf
from reconstruction.records import DatasetError
from reconstruction.geometry import invert_pose


class TestSevenScenes:
    def test_read(self, seven_scenes):
        root, poses = seven_scenes
        train = read_7scenes(root, "train")
        test = read_7scenes(root, "test")
        assert [r.name for r in train] == [f"seq-01/frame-{i:06d}.color.png" for i in range(6)]
        assert len(test) == 3 and {r.sequence for r in test} == {"seq-02"}
        r = train[2]
        M = poses["seq-01/frame-000002"]
        assert np.allclose(r.position, M[:3, 3])
        assert np.allclose(pose_to_cam_from_world(r.position, r.qvec), invert_pose(M[:3]), atol=1e-6)
        assert r.qvec[0] >= 0 and [x.order for x in train] == list(range(6))

    def test_malformed_pose(self, seven_scenes):
        root, _ = seven_scenes
        bad = root / "seq-01" / "frame-000003.pose.txt"
        bad.write_text("1 0 0 0\n0 1 0 0\n0 0 1\n0 0 0 1\n")
        with pytest.raises(DatasetError, match=r"frame-000003\.pose\.txt:3: expected 4 numbers"):
            read_7scenes(root, "train")
        bad.write_text("2 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
        with pytest.raises(DatasetError, match="not a rotation"):
            read_7scenes(root, "train")

    def test_bad_split_line(self, seven_scenes):
        root, _ = seven_scenes
        (root / "TrainSplit.txt").write_text("sequence1\nseq-3\n")
        with pytest.raises(DatasetError, match=r"TrainSplit\.txt:2: expected 'sequenceN'"):
            read_7scenes(root, "train")
        (root / "TrainSplit.txt").write_text("sequence5\n")
        with pytest.raises(DatasetError, match="seq-05 not found"):
            read_7scenes(root, "train")


class TestCambridge:
    def test_read(self, cambridge):
        root, poses = cambridge
        train = read_cambridge(root, "train")
        assert len(train) == 5 and len(read_cambridge(root, "test")) == 2
        r = train[3]
        c, q = poses[r.name]
        assert np.allclose(r.position, c, atol=1e-5) and np.allclose(r.qvec, q, atol=1e-5)
        assert r.sequence == "seq1" and r.order == 4

    def test_malformed_line(self, cambridge):
        root, _ = cambridge
        f = root / "dataset_train.txt"
        lines = f.read_text().splitlines()
        lines[4] = lines[4].rsplit(" ", 1)[0]  # drop R
        f.write_text("\n".join(lines) + "\n")
        with pytest.raises(DatasetError, match=r"dataset_train\.txt:5: expected .*got 6 numbers"):
            read_cambridge(root, "train")
        lines[4] = "seq1/frame00002.png 1 2 3 a 0 0 0"
        f.write_text("\n".join(lines) + "\n")
        with pytest.raises(DatasetError, match=r"dataset_train\.txt:5: non-numeric"):
            read_cambridge(root, "train")

    def test_missing_image(self, cambridge):
        root, _ = cambridge
        (root / "seq2" / "frame00001.png").unlink()
        with pytest.raises(DatasetError, match="frame00001.png not found"):
            read_cambridge(root, "test")


def _rec(seq, order, pos=(0, 0, 0)):
    return PoseRecord(f"{seq}/{order}", None, np.array(pos, float), np.array([1.0, 0, 0, 0]), seq, order)


class TestWindowsAndStats:
    def test_windows(self):
        recs = [_rec("a", i) for i in range(25)] + [_rec("b", i) for i in range(3)]
        w = make_windows(recs, steps=3, skip=10)
        assert w[24] == [4, 14, 24] and w[5] == [0, 0, 5]
        assert w[27] == [25, 26, 27]  # short sequence: skip shortened to 1
        assert make_windows(recs, 1, 10)[7] == [7]

    def test_windows_shuffled_order(self):
        recs = [_rec("a", i) for i in (3, 1, 2, 0)]
        assert make_windows(recs, 2, 1)[0] == [2, 0]  # order 3 follows order 2 (index 2)

    def test_stats_and_mean_pose(self):
        recs = [_rec("a", 0, (1, 0, 0)), _rec("a", 1, (-1, 0, 0))]
        s = PoseStats.from_records(recs)
        assert np.allclose(s.mean, 0) and s.scale == pytest.approx(1.0)
        assert PoseStats.from_dict(s.to_dict()).scale == s.scale
        assert np.allclose(PoseStats.from_dict(s.to_dict()).qvec, s.qvec) and np.allclose(s.qvec, [1, 0, 0, 0])
        old = PoseStats.from_dict({"mean": [0, 0, 0], "scale": 2.0})  # checkpoints written before "qvec"
        assert np.array_equal(old.qvec, [1, 0, 0, 0])
        assert PoseStats.from_records(recs, "none").scale == 1.0
        p, q = mean_pose(recs)
        assert np.allclose(p, 0) and np.allclose(q, [1, 0, 0, 0])


def test_dataset_items(seven_scenes):
    root, _ = seven_scenes
    conf = OmegaConf.create(default_conf["data"])
    conf.merge_with({"format": "7scenes", "root": str(root), "image_size": 36, "crop_size": [32, 32], "steps": 2,
                     "skip": 1, "jitter": [0.3, 0.3, 0.3, 0.1]})
    recs = read_split(conf, "train")
    stats = PoseStats.from_records(recs)
    ds = APRDataset(recs, stats, conf, train=True, seed=0)
    item = ds[3]
    assert item["image"].shape == (2, 3, 32, 32) and item["position"].shape == (2, 3) and item["qvec"].shape == (2, 4)
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert torch.equal(ds[3]["image"], item["image"])  # seeded augmentation repeats
    assert torch.allclose(item["position"][1], torch.tensor((recs[3].position - stats.mean) / stats.scale).float())


def test_seasons_mini_cmu(seasons_mini_cmu):
    conf = {"format": "cmu", "root": str(seasons_mini_cmu), "slices": [1]}
    train, test = read_split(conf, "train"), read_split(conf, "test")
    assert len(train) == 20 and len(test) > 0 and {r.map_id for r in train + test} == {"slice1"}
    with pytest.raises(DatasetError, match="separate world frames"):
        read_split({**conf, "slices": None}, "train")


class TestLoadImage:
    def test_same_pixels_as_cv2_and_resized(self, tmp_path):
        import cv2

        from localization.apr.data import load_image

        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        for name in ("a.png", "a.jpg"):
            cv2.imwrite(str(tmp_path / name), img)
            ref = cv2.cvtColor(cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            for short in (15, 30, 60):  # INTER_AREA when shrinking, INTER_LINEAR otherwise
                s = short / 30
                interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
                expected = cv2.resize(ref, (max(short, round(40 * s)), short), interpolation=interp)
                out = load_image(tmp_path / name, short)
                assert out.dtype == np.uint8 and out.shape == (short, round(40 * s), 3)
                assert np.array_equal(out, expected), (name, short)

    def test_truncated_and_missing_files(self, tmp_path):
        import cv2

        from localization.apr.data import load_image

        cv2.imwrite(str(tmp_path / "a.jpg"), np.full((64, 64, 3), 128, np.uint8))
        data = (tmp_path / "a.jpg").read_bytes()
        (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
        for name in ("cut.jpg", "none.png"):
            with pytest.raises(DatasetError, match=name) as info:
                load_image(tmp_path / name, 32)
            assert "\n" not in str(info.value)
