"""End to end on a small generated dataset: generate -> build-map -> localize -> evaluate, a run killed midway
and resumed, and a corrupt query image."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluation import evaluate
from fgsn.utils.config import merge_config
from fgsn.utils.io import ImageReadError
from localization import localize
from reconstruction import build_map, features, synthetic
from reconstruction.datasets import load_dataset
from tests.killing import assert_clean

REPO = Path(__file__).resolve().parents[1]
DATA_OVERRIDES = ["trajectory.n_database=14", "trajectory.n_queries=4", "conditions=[dusk,night]",
                  "write_semantics=false", "write_correspondences=false"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data = root / "data"
    synthetic.main(merge_config(synthetic.default_conf, overrides=DATA_OVERRIDES), data)
    ds = load_dataset("cmu", data)
    build_map.main(merge_config(build_map.default_conf), ds, "slice2", ds.maps["slice2"].model_path, root / "cache")
    return root, data


def _conf(root, cache_dir=None, **extra):
    return localize.build_conf("p3p", overrides=[f"cache_dir={cache_dir or root / 'cache'}"], extra=extra or None)


def test_localize_and_evaluate(demo):
    root, data = demo
    ds = load_dataset("cmu", data)
    out = root / "run"
    sub = localize.main(_conf(root), ds, out)
    for name in ("config.yaml", "log.txt", "results.jsonl", "submission.txt", "failed.txt"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["name"] for r in records) == sorted(q.name for q in ds.queries)
    report = evaluate.main(ds, sub, out)
    assert report["thresholds"] == [[0.25, 2], [0.5, 5], [5, 10]]
    assert set(report["conditions"]) == {"dusk", "night"} and set(report["groups"]) == {"urban"}
    assert report["all"]["num_queries"] == 8
    assert report["conditions"]["dusk"]["recall"][1] == 100.0
    assert report["all"]["recall"][2] >= 75.0
    assert (out / "eval.md").is_file() and (out / "cumulative_errors.png").stat().st_size > 1000
    with pytest.raises(FileExistsError, match="--resume"):
        localize.main(_conf(root), ds, out)


def test_kill_and_resume_gives_same_submission(demo):
    root, data = demo
    ds = load_dataset("cmu", data)
    reference = localize.main(_conf(root), ds, root / "uninterrupted", overwrite=True).read_text()

    out = root / "killed"
    cmd = [sys.executable, "-m", "evaluation.cli", "localize", "--dataset", "cmu", "--root", str(data), "--out", str(out),
           "--workers", "2", f"cache_dir={root / 'cache'}"]
    env = {**os.environ, "GLOG_minloglevel": "2"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = len(results.read_text().splitlines())
    assert 2 <= n_done < len(ds.queries)
    with open(results, "a") as f:  # a line cut by the kill
        f.write('{"name": "img_000')
    resumed = localize.main(_conf(root, workers=2), ds, out, resume=True)
    assert resumed.read_text() == reference
    names = [json.loads(line)["name"] for line in results.read_text().splitlines()]
    assert sorted(names) == sorted(q.name for q in ds.queries)  # every query exactly once
    assert_clean(out)  # no *.tmp left, the caches' HDF5 files open and read in full
    assert_clean(root / "cache")


def test_corrupt_query_image(demo, tmp_path):
    root, data = demo
    ds = load_dataset("cmu", data)
    q = ds.queries[0]
    bad = tmp_path / q.name
    bad.write_bytes(q.path.read_bytes()[:2000])  # truncated JPEG
    with pytest.raises(ImageReadError, match=f"{q.name}: cannot decode image"):
        features.main(features.default_conf, [(q.key, bad)], tmp_path / "f.h5")
    q.path = bad
    out = tmp_path / "run"
    localize.main(_conf(root, cache_dir=tmp_path / "cache"), ds, out)
    rec = {json.loads(l)["name"]: json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()}
    assert not rec[q.name]["success"] and "cannot decode image" in rec[q.name]["info"]["reason"]
    assert sum(r["success"] for r in rec.values()) >= len(ds.queries) - 2  # the others are still localized
    assert q.name in (out / "failed.txt").read_text()


def test_resume_of_a_run_saved_before_new_default_keys(demo, tmp_path):
    """A run whose saved config lacks keys added to the defaults later resumes when they keep their defaults;
    setting such a key, or changing a saved one, is still refused."""
    from omegaconf import OmegaConf

    root, data = demo
    ds = load_dataset("cmu", data)
    out = tmp_path / "run"
    localize.main(_conf(root, cache_dir=tmp_path / "cache"), ds, out)
    saved = OmegaConf.load(out / "config.yaml")
    del saved.localizer.ransac["adaptive"]  # as written by a version without the key
    OmegaConf.save(saved, out / "config.yaml")
    localize.main(_conf(root, cache_dir=tmp_path / "cache"), ds, out, resume=True)
    OmegaConf.save(saved, out / "config.yaml")
    with pytest.raises(ValueError, match="different"):
        localize.main(_conf(root, cache_dir=tmp_path / "cache", localizer={"ransac": {"adaptive": True}}), ds, out,
                      resume=True)
    with pytest.raises(ValueError, match=r"different.*localizer\.ransac\.num_iterations: \d+ -> 500.*--overwrite"):
        localize.main(_conf(root, cache_dir=tmp_path / "cache", localizer={"ransac": {"num_iterations": 500}}), ds,
                      out, resume=True)
