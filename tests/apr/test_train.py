"""Training loop, checkpoints (round trip, resume), the CLI, and the Localizer."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.cli import main as cli_main
from localization.apr.data import PoseRecord
from localization.apr.inference import load_checkpoint, predict_images
from localization.apr.train import build_conf, main


def _conf(tmp_path, root, name="posenet", fmt="7scenes", **extra):
    overrides = [f"model.name={name}", f"experiment={name}", f"output_root={tmp_path / 'out'}",
                 f"data.format={fmt}", f"data.root={root}", "data.image_size=36", "data.crop_size=[32,32]",
                 "model.backbone.depth=10", "model.backbone.base_width=8", "train.batch_size=4",
                 "train.iterations=4", "train.log_every=1", "train.save_every=2", "train.lr=1e-3"]
    if name == "posenet":
        overrides += ["model.feat_dim=16", "model.aux_dim=8", "model.dropout=0.0"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return build_conf(None, overrides)


def test_checkpoint_round_trip(tmp_path, seven_scenes):
    root, _ = seven_scenes
    out = main(_conf(tmp_path, root, **{"data.holdout_every": 3}))
    assert {"config.yaml", "log.txt", "metrics.csv", "eval.csv", "metrics.json"} <= {p.name for p in out.iterdir()}
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["iteration"] == 4 and "median_t_m" in summary["mean_pose_baseline"]
    assert summary["val_images"] == 2 and summary["train_images"] == 4 and "val_median_t_m" in summary["test"]
    assert set(summary["test_per_sequence"]) == {"seq-02"}
    ckpt = torch.load(out / "checkpoints" / "checkpoint_last.pt", weights_only=True)
    assert {"model", "optimizer", "config", "iteration", "metrics", "pose_stats", "map_ids"} <= set(ckpt)
    assert ckpt["iteration"] == 4 and len(ckpt["pose_stats"]["mean"]) == 3


def test_trained_model_round_trips_through_checkpoint(tmp_path, seven_scenes):
    from localization.apr.data import PoseStats, read_split
    from localization.apr.models import get_model
    from localization.apr.train import _checkpoint, _save

    root, _ = seven_scenes
    conf = _conf(tmp_path, root, "atloc", **{"model.feat_dim": 16})
    torch.manual_seed(0)
    model = get_model("atloc")(conf.model)
    stats = PoseStats.from_records(read_split(conf.data, "train"))
    model.set_pose_stats(stats.mean, stats.scale)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    data = {"image": torch.rand(4, 1, 3, 32, 32, generator=g), "position": torch.randn(4, 1, 3, generator=g),
            "qvec": torch.nn.functional.normalize(torch.randn(4, 1, 4, generator=g), dim=-1).abs()}
    for _ in range(3):  # a few steps, so BN statistics and learned loss weights moved
        losses, _ = model.loss(model(data), data)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    model.eval()
    path = _save(_checkpoint(model, opt, None, conf, 3, {}, stats, ["chess"]), tmp_path / "ckpt")
    loaded, ckpt = load_checkpoint(path)
    assert ckpt["iteration"] == 3 and ckpt["map_ids"] == ["chess"]
    paths = sorted(root.glob("seq-02/*.color.png"))
    a = predict_images(model, paths, ["s"] * 3, [0, 1, 2], 36, [32, 32], progress=False)
    b = predict_images(loaded, paths, ["s"] * 3, [0, 1, 2], 36, [32, 32], progress=False)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert loaded.s_q.item() == model.s_q.item() != -3.0
    # the mean training rotation (start of sequential inference) travels in pose_stats
    assert np.allclose(loaded.pose_qvec.numpy(), stats.qvec, atol=1e-7) and not np.allclose(stats.qvec, [1, 0, 0, 0])


def test_holdout_split():
    from localization.apr.train import split_holdout

    recs = [PoseRecord(str(i), None, np.zeros(3), np.array([1.0, 0, 0, 0]), "a", i) for i in range(10)]
    train, val = split_holdout(recs[::-1], 4)
    assert [r.order for r in val] == [6, 2] and len(train) == 8
    assert split_holdout(recs, 0) == (recs, [])


def test_resume_matches_uninterrupted(tmp_path, seven_scenes):
    root, _ = seven_scenes
    full = main(_conf(tmp_path / "a", root))
    main(_conf(tmp_path / "b", root, **{"train.iterations": 2}))
    resumed = main(_conf(tmp_path / "b", root), restore=True)
    sa = torch.load(full / "checkpoints" / "checkpoint_last.pt", weights_only=True)["model"]
    sb = torch.load(resumed / "checkpoints" / "checkpoint_last.pt", weights_only=True)["model"]
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k


def test_vlocnet_resume_alternates_as_uninterrupted(tmp_path, seven_scenes):
    """VLocNet's alternating optimisation follows the trainer's iteration: a run stopped after an odd number of
    steps (3: global, odometry, global) and restored goes on with an odometry step, so its weights equal those of
    an uninterrupted 5-step run, with dropout and the previous-pose noise on: the trainer seeds torch's generator
    per (seed, iteration), so the restored steps draw what the uninterrupted ones drew (they did not before)."""
    root, _ = seven_scenes
    extra = {"model.fc_dim": 16, "model.dropout": 0.3, "data.steps": 3, "data.skip": 1, "train.save_every": 0}
    full = main(_conf(tmp_path / "a", root, "vlocnet", **{"train.iterations": 5, **extra}))
    main(_conf(tmp_path / "b", root, "vlocnet", **{"train.iterations": 3, **extra}))
    resumed = main(_conf(tmp_path / "b", root, "vlocnet", **{"train.iterations": 5, **extra}), restore=True)
    sa = torch.load(full / "checkpoints" / "checkpoint_last.pt", weights_only=True)["model"]
    sb = torch.load(resumed / "checkpoints" / "checkpoint_last.pt", weights_only=True)["model"]
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k


def test_restore_without_checkpoint(tmp_path, seven_scenes):
    with pytest.raises(FileNotFoundError, match="checkpoint_last.pt"):
        main(_conf(tmp_path, seven_scenes[0]), restore=True)


def test_config_errors(tmp_path, seven_scenes):
    with pytest.raises(ValueError, match="model.name"):
        build_conf(None, ["experiment=x"])
    with pytest.raises(ValueError, match="unknown APR model"):
        build_conf(None, ["model.name=foo"])
    with pytest.raises(ValueError, match="feat_dimm"):
        build_conf(None, ["model.name=atloc", "model.feat_dimm=3"])



@pytest.mark.parametrize("overrides, match", [
    (["model.name=vlocnet", "model.optimisation=alternate"], r"model.optimisation='alternate' is invalid: expected one of alternating, joint"),
    (["model.name=posenet", "train.lr=-1"], r"train.lr=-1 is invalid: expected a number > 0"),
    (["model.name=atloc", "train.lr_schedule=cosine"], r"train.lr_schedule='cosine' is invalid"),
    (["model.name=atloc", "device=auto"], r"device='auto' is invalid: expected cpu, cuda or cuda:N"),
    (["model.name=atloc_plus", "model.relative=consecutive"], r"model.relative='consecutive' is invalid"),
    (["model.name=colorization", "model.color_loss=mean"], r"model.color_loss='mean' is invalid"),
    (["model.name=atloc", "train.iterations=abc"], r"train.iterations='abc' is invalid"),
])
def test_wrong_values_fail_at_merge_time(overrides, match):
    """The trainer's and the models' enumerated and numeric keys are checked when the configuration is built,
    before any data is read (they were only type-inferred)."""
    from fgsn.utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        build_conf(None, ["experiment=x", "data.root=/nonexistent", *overrides])


def test_cli_with_preset(tmp_path, cambridge):
    root, _ = cambridge
    rc = cli_main(["train-apr", "configs/apr/atloc_plus_cpu.yaml", "experiment=cli", f"output_root={tmp_path}",
                   "data.format=cambridge", f"data.root={root}", "data.image_size=36", "data.crop_size=[32,32]",
                   "model.feat_dim=16", "train.iterations=2", "train.batch_size=2"])
    assert rc == 0
    assert (tmp_path / "cli" / "checkpoints" / "checkpoint_last.pt").is_file()


@pytest.mark.parametrize("name", ["atloc", "vlocnet"])
def test_localizer_on_seasons_mini(tmp_path, seasons_mini_cmu, name):
    from localization.apr.localizer import APRLocalizer
    from reconstruction.datasets import load_dataset

    extra = {"data.slices": "[1]", "train.iterations": 2, "train.save_every": 0, "model.dropout": 0.0}
    extra.update({"model.feat_dim": 16} if name == "atloc" else {"model.fc_dim": 16, "data.steps": 2})
    out = main(_conf(tmp_path, seasons_mini_cmu, name, "cmu", **extra))
    ds = load_dataset("cmu", seasons_mini_cmu)
    conf = APRLocalizer.merged_conf({"checkpoint": str(out / "checkpoints" / "checkpoint_last.pt")})
    loc = APRLocalizer(conf, ds, tmp_path / "work")
    loc.prepare()
    q1 = next(q for q in ds.queries if q.map_id == "slice1")
    q2 = next(q for q in ds.queries if q.map_id == "slice2")
    r = loc.localize(q1, np.random.default_rng(0))
    assert r.success and r.cam_from_world.shape == (3, 4)
    assert np.allclose(r.cam_from_world[:, :3] @ r.cam_from_world[:, :3].T, np.eye(3), atol=1e-6)
    fresh = APRLocalizer(conf, ds, tmp_path / "work")  # no prepare(): computed on demand, same answer
    assert np.allclose(fresh.localize(q1, np.random.default_rng(0)).cam_from_world, r.cam_from_world, atol=1e-5)
    import pickle  # the batch runner sends the prepared localizer to spawned workers

    clone = pickle.loads(pickle.dumps(loc))
    assert np.array_equal(clone.localize(q1, np.random.default_rng(0)).cam_from_world, r.cam_from_world)
    failed = loc.localize(q2, np.random.default_rng(0))
    assert not failed.success and "slice2" in failed.info["reason"]


def _untrained(name, tmp_path, root, **extra):
    """An untrained (seeded) model in eval mode with the training split's pose statistics, and its conf."""
    from localization.apr.data import PoseStats, read_split
    from localization.apr.models import get_model

    extra = {"model.fc_dim": 16, "data.steps": 2, **extra} if name == "vlocnet" else {"model.feat_dim": 16, **extra}
    conf = _conf(tmp_path, root, name, **extra)
    torch.manual_seed(0)
    model = get_model(name)(conf.model)
    stats = PoseStats.from_records(read_split(conf.data, "train"))
    model.set_pose_stats(stats.mean, stats.scale, stats.qvec)
    return model.eval(), conf, stats


@pytest.mark.parametrize("name", ["atloc", "vlocnet"])
def test_predict_images_skips_unreadable_image(tmp_path, seven_scenes, name):
    from reconstruction.records import DatasetError

    root, _ = seven_scenes
    model, _, _ = _untrained(name, tmp_path, root)
    good = sorted(root.glob("seq-02/*.color.png"))
    bad = root / "seq-02" / "frame-corrupt.color.png"
    bad.write_bytes(b"not a png")
    paths = [good[0], bad, good[1], good[2]]
    with pytest.raises(DatasetError, match="frame-corrupt"):
        predict_images(model, paths, ["s"] * 4, [0, 1, 2, 3], 36, [32, 32], progress=False)
    errors = {}
    pos, qv = predict_images(model, paths, ["s"] * 4, [0, 1, 2, 3], 36, [32, 32], progress=False, errors=errors)
    assert list(errors) == [1] and "frame-corrupt" in errors[1]
    assert np.isnan(pos[1]).all() and np.isnan(qv[1]).all()
    # the readable images get exactly what they get without the corrupt one (VLocNet: the chain skips the frame)
    ref_pos, ref_qv = predict_images(model, good, ["s"] * 3, [0, 2, 3], 36, [32, 32], progress=False)
    assert np.allclose(pos[[0, 2, 3]], ref_pos, atol=1e-6) and np.allclose(qv[[0, 2, 3]], ref_qv, atol=1e-6)


def test_localizer_fails_only_the_unreadable_query(tmp_path, seven_scenes):
    """One corrupt image in a VLocNet query sequence fails that query, with the file in the reason; the rest of
    the sequence is localized, in prepare() and on demand alike."""
    from types import SimpleNamespace

    from localization.apr.localizer import APRLocalizer
    from localization.apr.train import _checkpoint, _save
    from reconstruction.records import ImageRecord

    root, _ = seven_scenes
    model, conf, stats = _untrained("vlocnet", tmp_path, root)
    path = _save(_checkpoint(model, torch.optim.Adam(model.parameters()), None, conf, 0, {}, stats, ["chess"]),
                 tmp_path / "ckpt")
    (root / "seq-02" / "frame-000001.color.png").write_bytes(b"\x89PNG truncated")
    queries = [ImageRecord(f"q{i}.png", f"q{i}", root / f"seq-02/frame-{i:06d}.color.png", None, "c0", "night",
                           ("urban",), float(i), "chess") for i in range(3)]
    ds = SimpleNamespace(queries=queries)
    conf = APRLocalizer.merged_conf({"checkpoint": str(path)})
    for prepared in (True, False):
        loc = APRLocalizer(conf, ds, tmp_path / "work")
        if prepared:
            loc.prepare()
        results = [loc.localize(q, np.random.default_rng(0)) for q in queries]
        assert [r.success for r in results] == [True, False, True]
        assert "frame-000001.color.png" in results[1].info["reason"]
        assert results[2].cam_from_world.shape == (3, 4)


@pytest.mark.parametrize("name", ["atloc", "vlocnet"])
def test_localizer_prepare_predicts_pending_queries(tmp_path, seven_scenes, name):
    """A resumed run's prepare(todo) predicts only the pending queries (VLocNet: their whole sequences, as the
    chain starts at a sequence's start), with the same poses as a full pass."""
    from types import SimpleNamespace

    from localization.apr.localizer import APRLocalizer
    from localization.apr.train import _checkpoint, _save
    from reconstruction.records import ImageRecord

    root, _ = seven_scenes
    model, conf, stats = _untrained(name, tmp_path, root)
    path = _save(_checkpoint(model, torch.optim.Adam(model.parameters()), None, conf, 0, {}, stats, ["chess"]),
                 tmp_path / "ckpt")
    queries = [ImageRecord(f"{seq}-{i}.png", f"{seq}-{i}", root / f"{seq}/frame-{i:06d}.color.png", None, "c0",
                           cond, ("urban",), float(i), "chess")  # two sequences: (map, condition, camera)
               for seq, cond in (("seq-01", "night"), ("seq-02", "snow")) for i in range(3)]
    ds = SimpleNamespace(queries=queries)
    conf = APRLocalizer.merged_conf({"checkpoint": str(path)})
    full = APRLocalizer(conf, ds, tmp_path / "work")
    full.prepare()
    resumed = APRLocalizer(conf, ds, tmp_path / "work")
    resumed.prepare([queries[4]])  # seq-02, frame 1
    expected = {"seq-02-1.png"} if name == "atloc" else {"seq-02-0.png", "seq-02-1.png", "seq-02-2.png"}
    assert set(resumed._cache) == expected
    for n in expected:
        assert np.allclose(resumed._cache[n][0], full._cache[n][0], atol=1e-6)


@pytest.mark.parametrize("preset", sorted(p.name for p in (Path(__file__).parents[2] / "configs" / "apr").glob("*.yaml")
                                          if p.name != "demo_long_sequence.yaml"))
def test_every_preset_builds_its_model(preset):
    """Each preset merges in struct mode (a misspelt key would raise) and its network can be built."""
    from localization.apr.models import get_model

    conf = build_conf(Path(__file__).parents[2] / "configs" / "apr" / preset, ["experiment=x", "data.root=/nowhere"])
    model = get_model(conf.model.name)(conf.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert conf.data.crop_size[0] <= conf.data.image_size


def test_killed_and_restored_run_matches_uninterrupted(tmp_path, seven_scenes):
    """``fgsn-loc train-apr --restore`` after a SIGKILL partway (issue 13): the same final weights, test errors
    and CSV rows as an uninterrupted run (CPU, one thread, batches seeded per iteration: training repeats
    exactly); the resumed run starts at the last checkpoint, leaves the checkpoints and rows written before it
    untouched, and logs every later row once."""
    import csv

    from tests.killing import assert_clean, cli, kill_when, run_cli

    root, _ = seven_scenes
    overrides = ["model.name=posenet", "experiment=posenet", "data.format=7scenes", f"data.root={root}",
                 "data.image_size=36", "data.crop_size=[32,32]", "model.backbone.depth=10",
                 "model.backbone.base_width=8", "model.feat_dim=16", "model.aux_dim=8", "model.dropout=0.0",
                 "train.batch_size=4", "train.iterations=8", "train.log_every=1", "train.save_every=2",
                 "train.eval_every=3", "train.lr=1e-3"]
    ref, out = tmp_path / "reference" / "posenet", tmp_path / "killed" / "posenet"
    run_cli(cli("train-apr", *overrides, f"output_root={ref.parent}"), tmp_path / "reference.log")

    def rows(path, skip=("time_s",)):
        return [{k: v for k, v in r.items() if k not in skip} for r in csv.DictReader(open(path))]

    killed = cli("train-apr", *overrides, f"output_root={out.parent}")
    kill_when(killed, lambda: len(rows(out / "metrics.csv")) >= 3, tmp_path / "killed.log")
    saved = torch.load(out / "checkpoints" / "checkpoint_last.pt", weights_only=True)
    assert saved["iteration"] in (2, 4) and not saved["final"]
    before = {p.name: p.stat().st_mtime_ns for p in (out / "checkpoints").glob("checkpoint_0*.pt")}
    killed_lines = (out / "metrics.csv").read_text().splitlines(keepends=True)

    resumed = run_cli(killed + ["--restore"], tmp_path / "resumed.log")
    assert f"at iteration {saved['iteration']}." in resumed
    a = torch.load(ref / "checkpoints" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(out / "checkpoints" / "checkpoint_last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 8 and b["final"] and a["metrics"] == b["metrics"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert rows(out / "metrics.csv") == rows(ref / "metrics.csv")  # each iteration once, same values
    assert rows(out / "eval.csv") == rows(ref / "eval.csv") and len(rows(ref / "eval.csv")) == 3  # it 3, 6, 8
    kept = saved["log_rows"]["metrics.csv"] + 1  # the header and the rows up to the checkpoint: not redone
    assert (out / "metrics.csv").read_text().splitlines(keepends=True)[:kept] == killed_lines[:kept]
    assert {n: (out / "checkpoints" / n).stat().st_mtime_ns for n in before} == before
    ja, jb = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert ja["test"] == jb["test"] and ja["test_per_sequence"] == jb["test_per_sequence"]
    # a kill after the final checkpoint: --restore neither trains nor tests again, and writes metrics.json
    (out / "metrics.json").unlink()
    again = run_cli(killed + ["--restore"], tmp_path / "again.log")
    assert "at iteration 8." in again and "[it " not in again
    assert rows(out / "eval.csv") == rows(ref / "eval.csv")
    assert json.loads((out / "metrics.json").read_text())["test"] == ja["test"]
    assert_clean(out)


def _color_conf(tmp_path, root, **extra):
    extra = {"model.color_width": 4, "model.fuse_channels": 8, "model.fc_dim": 8, "model.dropout": 0.0,
             "train.lr": 3e-4, "model.colorizer_lr": 1e-3, "train.lr_schedule": "poly", **extra}
    return _conf(tmp_path, root, "colorization", **extra)


def test_colorization_param_groups_and_poly_schedule(tmp_path, seven_scenes):
    """Two parameter groups (localization part 3e-4, colourizer 1e-3, the paper's rates) decayed by
    (1 - it / iterations)^0.9 together."""
    from localization.apr.models import get_model
    from localization.apr.train import make_optimizer

    conf = _color_conf(tmp_path, seven_scenes[0], **{"train.iterations": 10})
    model = get_model("colorization")(conf.model)
    optimizer, scheduler = make_optimizer(model, conf.train)
    groups = optimizer.param_groups
    assert [(g["name"], g["lr"]) for g in groups] == [("localization", 3e-4), ("colorizer", 1e-3)]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.colorizer.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    lrs = {}
    for it in range(11):
        lrs[it] = [g["lr"] for g in groups]
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx([3e-4, 1e-3])
    assert lrs[5] == pytest.approx([3e-4 * 0.5 ** 0.9, 1e-3 * 0.5 ** 0.9])
    assert lrs[10] == [0.0, 0.0]
    # one group for the other models; the default schedule is a step schedule (none when lr_step = 0)
    other = _conf(tmp_path, seven_scenes[0], **{"train.lr_step": 3})
    opt, sched = make_optimizer(get_model("posenet")(other.model), other.train)
    assert len(opt.param_groups) == 1 and isinstance(sched, torch.optim.lr_scheduler.StepLR)
    with pytest.raises(ValueError, match="lr_schedule"):
        make_optimizer(model, _color_conf(tmp_path, seven_scenes[0], **{"train.lr_schedule": "cosine"}).train)


def test_poly_schedule_restored(tmp_path, seven_scenes):
    """A run restored from its iteration-2 checkpoint (as after a kill) continues the poly schedule of both
    groups: the same rates, weights and logged rows as the uninterrupted run."""
    import shutil

    root, _ = seven_scenes
    full = main(_color_conf(tmp_path / "a", root))
    b = tmp_path / "b" / "out" / "colorization"
    shutil.copytree(full, b)
    shutil.copy(b / "checkpoints" / "checkpoint_000002.pt", b / "checkpoints" / "checkpoint_last.pt")
    resumed = main(_color_conf(tmp_path / "b", root), restore=True)
    assert resumed == b
    sa, sb = (torch.load(d / "checkpoints" / "checkpoint_last.pt", weights_only=True) for d in (full, resumed))
    assert sb["scheduler"]["last_epoch"] == sa["scheduler"]["last_epoch"] == 4
    assert [g["lr"] for g in sb["optimizer"]["param_groups"]] == [g["lr"] for g in sa["optimizer"]["param_groups"]]
    assert sa["optimizer"]["param_groups"][1]["lr"] == 0.0  # (1 - 4/4)^0.9
    for k in sa["model"]:
        assert torch.allclose(sa["model"][k].float(), sb["model"][k].float(), atol=1e-6), k
    lr_rows = [line.split(",")[1] for line in (full / "metrics.csv").read_text().splitlines()]
    assert lr_rows == [line.split(",")[1] for line in (resumed / "metrics.csv").read_text().splitlines()]
    assert float(lr_rows[2]) == pytest.approx(3e-4 * 0.5 ** 0.9)  # logged after iteration 2: the rate of it 2
