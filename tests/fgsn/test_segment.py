"""Segmentation to HDF5: schema, resolution, resume (skip existing), overwrite, overlays."""
import cv2
import h5py
import numpy as np
import pytest
import torch

from fgsn.models import PSPNet
from fgsn.segment import list_images, list_names, main, read_labels, segment_images

CONF = {"resize_short": 24, "patch": 32, "step": 21, "batch_size": 4, "confidence": True, "device": "cpu"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PSPNet({"depth": 18, "num_classes": 6}).eval()


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(30, 50), (40, 40), (20, 70)]):
        (tmp_path / "imgs" / "sub").mkdir(parents=True, exist_ok=True)
        p = tmp_path / "imgs" / ("sub" if i == 2 else "") / f"im{i}.jpg"
        cv2.imwrite(str(p), rng.integers(0, 255, (h, w, 3)).astype(np.uint8))
        paths.append(p)
    return tmp_path / "imgs", paths


def test_schema_and_resolution(model, images, tmp_path):
    root, paths = images
    out = segment_images(model, paths, tmp_path / "labels.h5", names=["a.jpg", "b.jpg", "s/c.jpg"], conf=CONF,
                         overlay_dir=tmp_path / "ov")
    for name, p in zip(["a.jpg", "b.jpg", "s/c.jpg"], paths):
        lab, conf = read_labels(out, name, confidence=True)
        h, w = cv2.imread(str(p)).shape[:2]
        assert lab.shape == (h, w) and lab.dtype == np.uint8 and lab.max() < 6
        assert conf.shape == (h, w) and (conf > 1 / 6 - 1e-3).all() and (conf <= 1).all()
    assert list_names(out) == ["a.jpg", "b.jpg", "s/c.jpg"]
    with h5py.File(out) as f:
        assert f.attrs["num_classes"] == 6 and tuple(f["a.jpg"].attrs["image_size"]) == (50, 30)
    assert (tmp_path / "ov" / "s" / "c.png").is_file()
    with pytest.raises(KeyError):
        read_labels(out, "missing.jpg")


def test_labels_match_direct_forward(model, tmp_path):
    # a 32x32 image with patch 32 and no resizing is one window: labels = argmax of the upsampled logits
    img = np.random.default_rng(1).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    p = tmp_path / "x.png"
    cv2.imwrite(str(p), img[:, :, ::-1])
    out = segment_images(model, [p], tmp_path / "l.h5", conf={**CONF, "resize_short": None})
    with torch.no_grad():
        x = torch.from_numpy(img).permute(2, 0, 1).float()[None]
        logits = torch.nn.functional.interpolate(model({"image": x})["logits"], (32, 32), mode="bilinear",
                                                 align_corners=True)
    assert (read_labels(out, "x.png") == logits.argmax(1)[0].numpy()).all()


def test_resume_and_overwrite(model, images, tmp_path):
    root, paths = images
    out = tmp_path / "labels.h5"
    segment_images(model, paths[:2], out, conf=CONF)
    with h5py.File(out, "a") as f:  # mark an existing entry: a resumed run must not touch it
        f["im0.jpg/labels"][0, 0] = 99
    segment_images(model, paths, out, conf=CONF)
    assert read_labels(out, "im0.jpg")[0, 0] == 99
    assert read_labels(out, "im2.jpg").shape == (20, 70)
    segment_images(model, paths, out, conf=CONF, overwrite=True)
    assert read_labels(out, "im0.jpg")[0, 0] < 6


def test_main_with_folder_and_list(model, images, tmp_path):
    root, paths = images
    ck = tmp_path / "ck.pt"
    from omegaconf import OmegaConf

    torch.save({"model": model.state_dict(), "config": {"model": OmegaConf.to_container(model.conf)}}, ck)
    out = main(CONF, ck, root, tmp_path / "f.h5")
    assert list_names(out) == ["im0.jpg", "im1.jpg", "sub/im2.jpg"]
    (tmp_path / "list.txt").write_text("imgs/im1.jpg\nimgs/sub/im2.jpg\n")
    ps, names = list_images(tmp_path / "list.txt")
    assert names == ["imgs/im1.jpg", "imgs/sub/im2.jpg"] and all(p.is_file() for p in ps)
    assert (read_labels(out, "im1.jpg") == read_labels(main(CONF, ck, tmp_path / "list.txt", tmp_path / "g.h5"),
                                                       "imgs/im1.jpg")).all()
