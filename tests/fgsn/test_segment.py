"""Segmentation to HDF5: schema, resolution, resume (skip existing), overwrite, overlays, kill and resume."""
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


def test_killed_and_resumed_run_matches_uninterrupted(model, tmp_path):
    """``fgsn-loc segment`` killed with SIGKILL partway and run again (issue 13): the label file equals an
    uninterrupted run's, the images finished before the kill are not segmented again (their overlays keep their
    modification times; the log counts them as done), and no partial file is left."""
    import re

    from omegaconf import OmegaConf

    from fgsn.utils.io import H5GroupWriter
    from tests.killing import assert_clean, cli, kill_when, run_cli

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(16):
        cv2.imwrite(str(tmp_path / "imgs" / f"im{i:02d}.jpg"), rng.integers(0, 255, (60, 80, 3)).astype(np.uint8))
    ck = tmp_path / "ck.pt"
    torch.save({"model": model.state_dict(), "config": {"model": OmegaConf.to_container(model.conf)}}, ck)
    overrides = ["resize_short=48", "patch=48", "step=32", "confidence=true", "device=cpu"]

    def command(name):
        return cli("segment", "--checkpoint", ck, "--images", tmp_path / "imgs", "--out", tmp_path / f"{name}.h5",
                   "--overlay-dir", tmp_path / f"{name}-overlays", *overrides)

    run_cli(command("reference"), tmp_path / "reference.log")
    out, writer = tmp_path / "killed.h5", H5GroupWriter(tmp_path / "killed.h5")
    kill_when(command("killed"), lambda: len(list(writer.parts_dir.glob("*.h5"))) >= 3, tmp_path / "killed.log")
    done = writer.pending()
    assert 3 <= len(done) < 16 and not out.exists()  # the file appears at the end of the run: complete
    overlays = {n: (tmp_path / "killed-overlays" / n.replace(".jpg", ".png")).stat().st_mtime_ns for n in done}

    resumed = run_cli(command("killed"), tmp_path / "resumed.log")
    assert re.search(rf"Segmenting {16 - len(done)} images \({len(done)} already in ", resumed)
    assert {n: (tmp_path / "killed-overlays" / n.replace(".jpg", ".png")).stat().st_mtime_ns for n in done} == overlays
    assert list_names(out) == list_names(tmp_path / "reference.h5") == [f"im{i:02d}.jpg" for i in range(16)]
    with h5py.File(tmp_path / "reference.h5") as a, h5py.File(out) as b:
        assert dict(a.attrs) == {**dict(b.attrs), "checkpoint": a.attrs["checkpoint"]}
        for n in list_names(out):
            for k in ("labels", "confidence"):
                assert np.array_equal(a[n][k][()], b[n][k][()]), (n, k)
            assert dict(a[n].attrs).keys() == dict(b[n].attrs).keys()
    for p in (tmp_path / "killed-overlays").glob("*.png"):
        assert cv2.imread(str(p)) is not None, p
    assert not writer.parts_dir.exists()
    assert_clean(tmp_path)
