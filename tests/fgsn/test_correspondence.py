from pathlib import Path

import numpy as np
import pytest

from fgsn.data.correspondence import (CorrespondenceDataset, crop_around, load_samples, points_in_crop,
                                      read_correspondence_file, split_samples)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


class TestReader:
    def test_tiny(self, tiny_corr_root):
        samples = load_samples(tiny_corr_root)
        assert len(samples) == 9
        s = samples[0]
        assert s.ref_path.is_file() and s.tgt_path.is_file()
        assert s.ref_name == "slice1/slice1/reference/img_0.png"
        assert np.allclose(s.pt_tgt - s.pt_ref, [4, 2])

    def test_real_file(self):
        root = SHARED_DATA / "seasons-mini" / "correspondence"
        files = sorted(root.glob("slice1/correspondence_data/*.mat"))
        if not files:
            pytest.skip("shared data not available")
        d = read_correspondence_file(files[0])
        assert d["im_i_path"].startswith("slice1/reference/") and d["pt_i"].shape == d["pt_j"].shape
        assert d["pt_i"].shape[1] == 2 and len(d["dist_from_center"]) == len(d["pt_i"])
        assert (root / "slice1" / "images" / d["im_j_path"]).is_file()


class TestSplit:
    def test_70_30_without_replacement(self):
        tr, va = split_samples(100, 0.3, seed=3)
        assert len(va) == 30 and len(tr) == 70
        assert not set(tr) & set(va) and set(tr) | set(va) == set(range(100))
        tr2, va2 = split_samples(100, 0.3, seed=3)
        assert (va == va2).all()
        assert not (split_samples(100, 0.3, seed=4)[1] == va).all()


class TestCrops:
    def test_crop_contains_point_and_drops_outside(self):
        rng = np.random.default_rng(0)
        img = np.arange(100 * 150).reshape(100, 150)
        for _ in range(50):
            c = rng.uniform([0, 0], [149, 99])
            crop, off = crop_around(img, c, 40, rng, jitter=0.5, pad_value=-1)
            assert crop.shape == (40, 40)
            assert 0 <= off[0] <= 110 and 0 <= off[1] <= 60  # inside the image
            assert points_in_crop(c[None], off, 40, img.shape)[0]
            u, v = np.round(c).astype(int) - off
            assert crop[v, u] == img[int(round(c[1])), int(round(c[0]))]
        pts = np.array([[off[0] - 1, off[1]], [off[0] + 39, off[1] + 39], [off[0] + 40, off[1]]], float)
        assert points_in_crop(pts, off, 40, img.shape).tolist() == [False, True, False]

    def test_half_pixel_points_index_inside_the_crop(self):
        """Regression: with round-half-to-even, round(p) - offset != round(p - offset) at .5 coordinates and odd
        offsets; a point kept by the old check indexed pixel 40 of a 40-pixel crop in training."""
        off = np.array([3, 5])
        pts = np.array([[3 + 39.5, 10.0], [3 + 38.5, 10.0], [3 - 0.5, 10.0], [10.0, 5 + 39.5]])
        assert points_in_crop(pts, off, 40, (100, 150)).tolist() == [False, True, True, False]
        grid = np.stack(np.meshgrid(np.arange(0, 60, 0.5), np.arange(0, 60, 0.5)), -1).reshape(-1, 2)
        for off in (np.array([3, 7]), np.array([4, 8]), np.array([5, 0])):
            loc = np.round(grid[points_in_crop(grid, off, 40, (100, 150))] - off)  # what the losses index
            assert loc.min() >= 0 and loc.max() <= 39

    def test_small_image_padded(self):
        img = np.ones((20, 30, 3), np.uint8)
        crop, off = crop_around(img, np.array([5.0, 5.0]), 32, np.random.default_rng(0), 0.5, np.array([7, 8, 9], np.uint8))
        assert tuple(off) == (0, 0) and crop.shape == (32, 32, 3)
        assert (crop[25, 31] == [7, 8, 9]).all() and (crop[19, 29] == 1).all()

    def test_dataset_sample(self, tiny_corr_root):
        ds = CorrespondenceDataset({"root": str(tiny_corr_root), "resize_short": 32, "crop_size": 24})
        assert len(ds.train_idx) + len(ds.val_idx) == 9 and len(ds.val_idx) == 3
        ex = ds.sample_crops(int(ds.train_idx[0]), np.random.default_rng(0))
        assert ex["image_ref"].shape == (24, 24, 3) and len(ex["pt_ref"]) == len(ex["pt_tgt"]) > 0
        assert ((ex["pt_ref"] > -0.5) & (ex["pt_ref"] < 23.5)).all()
        assert ((ex["pt_tgt"] > -0.5) & (ex["pt_tgt"] < 23.5)).all()
        for k in ("ref", "tgt"):  # the pixels the losses read: inside the crop, the points rounded
            assert ex[f"px_{k}"].dtype == np.int64 and (ex[f"px_{k}"] >= 0).all() and (ex[f"px_{k}"] <= 23).all()
            assert np.array_equal(ex[f"px_{k}"], np.round(ex[f"pt_{k}"]))
        # resized by 0.5: the (+4, +2) shift becomes (+2, +1) in resized pixels
        d = (ex["pt_tgt"] + ex["offset_tgt"]) - (ex["pt_ref"] + ex["offset_ref"])
        assert np.allclose(d, [2, 1])
