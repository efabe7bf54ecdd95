"""Every pipeline step's ``main`` run alone from its inputs on disk: features, map descriptors, 2D-3D matching,
label source and labelled map; each resumes (a second call writes nothing new) and redoes with ``overwrite``."""
import json

import cv2
import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fgsn.models import PSPNet
from fgsn.utils.config import merge_config
from fgsn.utils.io import ImageReadError
from localization import matching
from reconstruction import features, label_map, semantics, sfm_map
from reconstruction.datasets import load_dataset
from reconstruction.records import DatasetError
from reconstruction.label_map import LabelledMap
from reconstruction.semantics import LabelReader


def _write_images(folder, n, size=(96, 128)):
    """n textured grey JPEGs (blurred noise: SIFT finds features on it); returns (key, path) pairs."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, size).astype(np.uint8), (0, 0), 2.0)
        path = folder / f"img{i}.jpg"
        cv2.imwrite(str(path), cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX))
        items.append((f"sub/img{i}.jpg", path))
    return items


def _tiny_checkpoint_conf(tmp_path):
    """A label-step configuration segmenting with a random ResNet-18 PSPNet (K = 5) saved as a checkpoint."""
    torch.manual_seed(0)
    net = PSPNet({"depth": 18, "num_classes": 5})
    ckpt = tmp_path / "exp" / "checkpoints" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": net.state_dict(), "config": {"model": OmegaConf.to_container(net.conf)}}, ckpt)
    return merge_config(semantics.default_conf, overrides=[
        f"checkpoint={ckpt}", "segment.resize_short=48", "segment.patch=48", "segment.step=32", "segment.device=cpu"])


@pytest.fixture
def count_calls(monkeypatch):
    """count_calls(module, name) wraps a function or method and returns the list its calls append to."""

    def wrap(owner, name):
        calls, orig = [], getattr(owner, name)

        def spy(*args, **kwargs):
            calls.append(args)
            return orig(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)
        return calls

    return wrap


class TestFeatureStep:
    def test_extract_resume_overwrite_and_failed_images(self, tmp_path, count_calls):
        items = _write_images(tmp_path / "img", 2)
        bad = tmp_path / "img" / "bad.jpg"
        bad.write_bytes(items[0][1].read_bytes()[:300])  # truncated JPEG
        items.append(("sub/bad.jpg", bad))
        out = tmp_path / features.feature_filename(features.default_conf)
        calls = count_calls(features.SiftExtractor, "__call__")
        assert features.main(features.default_conf, items, out, skip_errors=True) == out
        assert len(calls) == 2
        with h5py.File(out) as f:
            assert sorted(f["sub"]) == ["img0.jpg", "img1.jpg"]
            kp = f["sub/img0.jpg/keypoints"]
            assert kp.dtype == np.float32 and kp.shape[1] == 2 and len(kp) > 10
            assert f["sub/img0.jpg/descriptors"].dtype == np.uint8 and tuple(f["sub/img0.jpg"].attrs["image_size"]) == (128, 96)
        failed = features.failed_images(out)
        assert list(failed) == ["sub/bad.jpg"] and "cannot decode image" in failed["sub/bad.jpg"]
        assert features.failed_images(out, ["sub/img0.jpg"]) == {}
        before = features.read_features(out, "sub/img1.jpg")
        features.main(features.default_conf, items, out, skip_errors=True)  # resumes: only the bad one is retried
        assert len(calls) == 2 and list(features.failed_images(out)) == ["sub/bad.jpg"]
        with pytest.raises(ImageReadError, match="cannot decode image"):
            features.main(features.default_conf, items, out)
        bad.write_bytes(items[0][1].read_bytes())  # the image is repaired: extracted and no longer failed
        features.main(features.default_conf, items, out, skip_errors=True)
        assert len(calls) == 3 and features.failed_images(out) == {}
        with h5py.File(out) as f:
            assert "failed_images" not in f.attrs
        features.main(features.default_conf, items, out, overwrite=True)
        assert len(calls) == 6
        after = features.read_features(out, "sub/img1.jpg")
        for k in before:
            np.testing.assert_array_equal(before[k], after[k])  # deterministic
        assert features.failed_images(tmp_path / "none.h5") == {}


def _write_map(path, descriptors, owner, xyz):
    M = len(xyz)
    with h5py.File(path, "w") as f:
        f["xyz"], f["point3D_ids"] = xyz, np.arange(M, dtype=np.int64)
        f["descriptors"], f["owner"] = descriptors, owner.astype(np.int32)
        f["d_min"], f["d_max"] = np.ones(M, np.float32), np.ones(M, np.float32)
        f["view_dir"], f["view_spread"] = np.zeros((M, 3), np.float32), np.zeros(M, np.float32)


class TestMatchingStep:
    @pytest.fixture
    def inputs(self, tmp_path):
        """A feature file with three queries (one failed) and two map descriptor files."""
        rng = np.random.default_rng(1)
        feature_path = tmp_path / "feats-sift-test.h5"
        maps, queries, expected = {}, [], {}
        with h5py.File(feature_path, "w") as f:
            for i, map_id in enumerate(("a", "b")):
                desc = rng.integers(0, 256, (40, 128)).astype(np.uint8)
                owner = np.arange(40) // 2  # two descriptors per point
                maps[map_id] = tmp_path / f"map-{map_id}.h5"
                _write_map(maps[map_id], desc, owner, rng.normal(size=(20, 3)))
                q = np.clip(desc[::3].astype(int) + rng.integers(-3, 4, (14, 128)), 0, 255).astype(np.uint8)
                key = f"s{i}/query/q.jpg"
                f[f"{key}/descriptors"], f[f"{key}/keypoints"] = q, rng.uniform(0, 50, (14, 2)).astype(np.float32)
                queries.append((key, map_id))
                expected[key] = matching.DescriptorIndex(desc, owner).match(q, 0.9, 10)
            f.attrs["failed_images"] = json.dumps({"s0/query/bad.jpg": "cannot decode image"})
        queries.insert(1, ("s0/query/bad.jpg", "a"))
        return feature_path, maps, queries, expected

    def test_match_resume_overwrite(self, inputs, tmp_path, count_calls):
        feature_path, maps, queries, expected = inputs
        out = tmp_path / matching.matches_filename(feature_path, matching.default_conf)
        assert out.name == "matches-sift-test-mean-r0.9-auto50000-ivf16384-p8-hnsw32-ef32.h5"  # flat for these maps
        calls = count_calls(matching.DescriptorIndex, "match")
        assert matching.main(matching.default_conf, queries, feature_path, maps, out) == out
        assert len(calls) == 2  # the failed query is skipped
        for key, map_id in queries:
            if "bad" in key:
                with pytest.raises(KeyError, match="no matches for query"):
                    matching.read_matches(out, key)
                continue
            m = matching.read_matches(out, key)
            assert m["map_id"] == map_id and len(m["query_idx"]) >= 10
            for k, v in expected[key].items():
                assert m[k].dtype == v.dtype
                np.testing.assert_array_equal(m[k], v)
        matching.main(matching.default_conf, queries, feature_path, maps, out)
        assert len(calls) == 2
        matching.main(matching.default_conf, queries, feature_path, maps, out, overwrite=True)
        assert len(calls) == 4
        np.testing.assert_array_equal(matching.read_matches(out, queries[0][0])["point_idx"],
                                      expected[queries[0][0]]["point_idx"])

    def test_parallel_matching_equals_serial(self, inputs, tmp_path):
        from fgsn.utils.parallel import Engine

        feature_path, maps, queries, expected = inputs
        with Engine(workers=2) as engine:
            out = matching.main(matching.default_conf, queries, feature_path, maps, tmp_path / "par.h5", engine=engine)
        for key, map_id in queries:
            if "bad" not in key:
                m = matching.read_matches(out, key)
                assert m["map_id"] == map_id
                for k, v in expected[key].items():
                    np.testing.assert_array_equal(m[k], v)

    @pytest.mark.parametrize("index", ["hnsw", "ivf"])
    def test_approximate_index_from_files(self, inputs, tmp_path, count_calls, index):
        feature_path, maps, queries, expected = inputs
        conf = OmegaConf.create({**matching.default_conf, "index": index, "ivf_nlist": 2, "ivf_nprobe": 2})
        out = tmp_path / matching.matches_filename(feature_path, conf)
        assert out.name != matching.matches_filename(feature_path, matching.default_conf)
        builds = count_calls(matching, "_build_index")
        matching.main(conf, queries, feature_path, maps, out)
        assert len(builds) == 2  # one index per map, cached beside its descriptor file
        assert sorted(p.name for p in tmp_path.glob("*.faiss")) == sorted(
            matching.index_filename(maps[m], conf, 20).name for m in maps)
        for key, _ in queries:
            if "bad" not in key:  # nprobe = nlist: an exhaustive search, the exact matches
                np.testing.assert_array_equal(matching.read_matches(out, key)["point_idx"], expected[key]["point_idx"])
        matching.main(conf, queries, feature_path, maps, out, overwrite=True)
        assert len(builds) == 2  # read back, not rebuilt

    def test_errors(self, inputs, tmp_path):
        feature_path, maps, queries, _ = inputs
        with pytest.raises(KeyError, match="no features for image s9/query/x.jpg"):
            matching.main(matching.default_conf, [("s9/query/x.jpg", "a")], feature_path, maps, tmp_path / "m.h5")
        with pytest.raises(KeyError, match="no map descriptor file"):
            matching.main(matching.default_conf, queries, feature_path, {"a": maps["a"]}, tmp_path / "m2.h5")

    def test_filename_of_default_features(self):
        conf = OmegaConf.create(matching.default_conf)
        assert (matching.matches_filename(features.feature_filename(features.default_conf), conf)
                == "matches-sift-n8192-pt0.0067-mean-r0.9-auto50000-ivf16384-p8-hnsw32-ef32.h5")


class TestLabelStep:
    def test_checkpoint_source_resume_overwrite(self, tmp_path, count_calls):
        from fgsn import segment

        conf = _tiny_checkpoint_conf(tmp_path)
        items = _write_images(tmp_path / "img", 2, size=(48, 64))
        out = semantics.labels_path(conf, tmp_path / "cache")
        assert out.name == "labels-exp-best-s48.h5"
        calls = count_calls(segment, "segment_images")
        assert semantics.main(conf, items[:1], out) == out
        assert semantics.main(conf, items, out) == out  # only the new image is segmented
        assert [len(c[1]) for c in calls] == [1, 1]
        semantics.main(conf, items, out)
        assert len(calls) == 2
        semantics.main(conf, items, out, overwrite=True)
        assert len(calls) == 3 and len(calls[2][1]) == 2
        reader = LabelReader(out)
        assert reader.num_classes == 5 and reader.labels("sub/img1.jpg").shape == (48, 64)

    def test_parallel_segmentation_equals_serial(self, tmp_path):
        """Two Dask workers write the same label maps as this process."""
        from fgsn.utils.parallel import Engine

        conf = _tiny_checkpoint_conf(tmp_path)
        items = _write_images(tmp_path / "img", 4, size=(48, 64))
        serial = semantics.main(conf, items, tmp_path / "serial.h5")
        with Engine(workers=2) as engine:
            par = semantics.main(conf, items, tmp_path / "par.h5", engine=engine)
        a, b = LabelReader(serial), LabelReader(par)
        for key, _ in items:
            la, lb = a.labels(key), b.labels(key)
            assert la.shape == (48, 64)
            np.testing.assert_array_equal(la, lb, err_msg=key)
        assert len(np.unique(a.labels(items[0][0]))) > 1  # a test that can fail: labels are not constant

    def test_labels_source(self, tmp_path):
        lab = np.zeros((4, 5), np.uint8)
        cv2.imwrite(str(tmp_path / "a.png"), lab)
        path = semantics.labels_from_pngs([("k/a.jpg", tmp_path / "a.png")], tmp_path / "labels-pre.h5", 3)
        conf = merge_config(semantics.default_conf, overrides=["source=labels", f"labels={path}"])
        assert semantics.labels_path(conf, tmp_path / "cache") == path
        mtime = path.stat().st_mtime_ns
        assert semantics.main(conf, [("k/a.jpg", tmp_path / "a.jpg")], path) == path
        assert path.stat().st_mtime_ns == mtime  # only checked, never written
        with pytest.raises(DatasetError, match="no labels for 1 of 2 images"):
            semantics.main(conf, [("k/a.jpg", None), ("k/b.jpg", None)], path)
        with pytest.raises(ValueError, match="reads"):
            semantics.main(conf, [], tmp_path / "other.h5")


def _h5_contents(path):
    """Every dataset of an HDF5 file by path, following the external links of H5GroupWriter files."""
    out = {}

    def walk(group, prefix):
        for k in group:
            obj = group[k]
            if isinstance(obj, h5py.Dataset):
                out[prefix + k] = obj[()]
            else:
                walk(obj, prefix + k + "/")

    with h5py.File(path) as f:
        walk(f, "")
        out["attrs"] = dict(f.attrs)
    return out


def test_parallel_features_equal_serial(tmp_path):
    """Two Dask workers write the same feature groups (every dataset equal) and the same failed list as one process."""
    from fgsn.utils.parallel import Engine

    items = _write_images(tmp_path / "img", 5)
    bad = tmp_path / "img" / "bad.jpg"
    bad.write_bytes(items[0][1].read_bytes()[:300])
    items.append(("sub/bad.jpg", bad))
    serial = features.main(features.default_conf, items, tmp_path / "serial.h5", skip_errors=True)
    with Engine(workers=2) as engine:
        par = features.main(features.default_conf, items, tmp_path / "par.h5", skip_errors=True, engine=engine)
    a, b = _h5_contents(serial), _h5_contents(par)
    assert sorted(a) == sorted(b) and len(a) == 5 * 4 + 1
    for k in a:
        if k != "attrs":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert a["attrs"] == b["attrs"] and "sub/bad.jpg" in json.loads(a["attrs"]["failed_images"])


def test_map_and_labelled_map_steps(semantic_demo, tmp_path):
    """The map descriptor step from a feature file, the labelled map step from the label and map files: each
    alone, resumed (file untouched) and overwritten (same contents), and on a 2-worker engine (the same files)."""
    data, _, labels = semantic_demo
    ds = load_dataset("cmu", data)
    (map_id,) = ds.maps
    feature_path = features.main(features.default_conf, [(r.key, r.path) for r in ds.database],
                                 tmp_path / features.feature_filename(features.default_conf))
    map_path = tmp_path / sfm_map.map_filename(map_id, feature_path.name)
    assert sfm_map.main(sfm_map.default_conf, ds, map_id, feature_path, map_path) == map_path
    m = sfm_map.MapDescriptors.load(map_path)
    assert m.xyz.shape[1] == 3 and len(m.owner) == len(m.descriptors) >= len(m.xyz) > 50

    conf = merge_config(label_map.default_conf)
    out = tmp_path / label_map.labelled_map_filename(map_path, "gt")
    assert label_map.main(conf, ds, map_id, labels, map_path, out) == out
    lmap = LabelledMap.load(out)
    np.testing.assert_array_equal(lmap.xyz, m.xyz)
    assert (lmap.label >= 0).mean() > 0.9

    stamps = {p: p.stat().st_mtime_ns for p in (map_path, out)}
    sfm_map.main(sfm_map.default_conf, ds, map_id, feature_path, map_path)
    label_map.main(conf, ds, map_id, labels, map_path, out)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    sfm_map.main(sfm_map.default_conf, ds, map_id, feature_path, map_path, overwrite=True)
    label_map.main(conf, ds, map_id, labels, map_path, out, overwrite=True)
    assert all(p.stat().st_mtime_ns != t for p, t in stamps.items())
    np.testing.assert_array_equal(sfm_map.MapDescriptors.load(map_path).descriptors, m.descriptors)
    np.testing.assert_array_equal(LabelledMap.load(out).label, lmap.label)
    # the map descriptors and the labelled map on a 2-worker engine: the same file contents
    from fgsn.utils.parallel import Engine

    with Engine(workers=2) as engine:
        par = sfm_map.main_maps(sfm_map.default_conf, ds, feature_path, {map_id: tmp_path / "par.h5"}, engine=engine)
        par_labelled = label_map.main_maps(conf, ds, labels, par, {map_id: tmp_path / "par-labelled.h5"},
                                           engine=engine)
    for serial_path, par_path in ((map_path, par[map_id]), (out, par_labelled[map_id])):
        a, b = _h5_contents(serial_path), _h5_contents(par_path)
        assert sorted(a) == sorted(b) and a["attrs"].keys() == b["attrs"].keys()
        for k in a:
            if k != "attrs":
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        for k in a["attrs"]:
            np.testing.assert_array_equal(a["attrs"][k], b["attrs"][k], err_msg=k)


def test_parallel_build_map_equals_serial(semantic_demo, tmp_path):
    """build-map's pair matching on two Dask workers gives the serial run's model: the same 3D points (in the same
    order) with the same tracks."""
    import pycolmap

    from fgsn.utils.config import merge_config
    from fgsn.utils.parallel import Engine
    from reconstruction import build_map
    from reconstruction.datasets import load_dataset

    data, cache, _ = semantic_demo
    ds = load_dataset("cmu", data)
    map_id, src = next(iter(ds.maps.items()))
    with Engine(workers=2) as engine:
        out = build_map.main(merge_config(build_map.default_conf), ds, map_id, tmp_path / "model", cache, engine=engine)

    def points(path):
        rec = pycolmap.Reconstruction(str(path))
        pts = [rec.points3D[i] for i in sorted(rec.points3D)]
        return (np.array([p.xyz for p in pts]),
                [[(e.image_id, e.point2D_idx) for e in p.track.elements] for p in pts])

    (xyz_s, tracks_s), (xyz_p, tracks_p) = points(src.model_path), points(out)
    assert len(xyz_s) > 500
    np.testing.assert_array_equal(xyz_p, xyz_s)
    assert tracks_p == tracks_s
