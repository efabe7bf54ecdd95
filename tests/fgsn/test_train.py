"""End-to-end training on a tiny synthetic correspondence set: runs, logs, checkpoints, resumes exactly."""
import csv

import numpy as np
import pytest
import torch

from fgsn.train import default_conf, label_agreement, main
from fgsn.utils.config import merge_config


def _conf(root, **over):
    base = [f"data.root={root}", "model.depth=18", "model.num_classes=4", "data.resize_short=48",
            "data.crop_size=40", "inference.patch=40", "inference.step=27", "clustering.samples_per_image=40",
            "clustering.pca_dim=8", "clustering.niter=5", "train.lr=0.01", "train.log_interval=1",
            "train.val_interval=2", "train.save_interval=1", "train.iterations=4", "train.device=cpu"]
    return merge_config(default_conf, overrides=base + [f"{k}={v}" for k, v in over.items()])


@pytest.fixture(scope="module")
def full_run(tiny_corr_root, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("full")
    best = main(_conf(tiny_corr_root), out)
    return out, best


def test_outputs(full_run):
    out, best = full_run
    assert best.is_file() and (out / "checkpoints" / "last.pt").is_file()
    assert (out / "config.yaml").is_file() and (out / "log.txt").stat().st_size > 0
    assert (out / "labels" / "clusters-iter000000.h5").is_file()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["event"] for r in rows].count("train") == 4
    assert [r["event"] for r in rows][0] == "cluster"
    val = [r for r in rows if r["event"] == "val"]
    assert [int(r["iteration"]) for r in val] == [0, 2, 4]  # iteration 0: the untrained-start classifier
    ck = torch.load(best, weights_only=True)
    assert ck["iteration"] > 0  # the iteration-0 validation is never the best checkpoint
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert last["metrics"]["init_val_agreement"] == float(val[0]["val_agreement"])
    for r in val:  # kappa = (p_o - p_e) / (1 - p_e) <= p_o
        assert -1.0 <= float(r["val_kappa"]) <= float(r["val_agreement"]) + 1e-9
    assert all(0 <= float(r["val_agreement"]) <= 1 for r in val)
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ck["iteration"] == 4 and ck["cluster_state"]["centroids"].shape == (4, 8)
    assert set(ck) >= {"model", "optimizer", "config", "metrics", "cluster_state"}


def test_resume_matches_uninterrupted(full_run, tiny_corr_root, tmp_path):
    out, _ = full_run
    main(_conf(tiny_corr_root, **{"train.iterations": 2}), tmp_path)
    main(_conf(tiny_corr_root), tmp_path, restore=True)
    a = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["event"] for r in rows].count("cluster") == 1  # the clustering is not redone on resume


def test_recluster_resets_classifier(tiny_corr_root, tmp_path):
    torch.set_num_threads(1)
    main(_conf(tiny_corr_root, **{"clustering.recluster": True, "clustering.interval": 2, "train.iterations": 3,
                                  "train.w_corr": 0.0}), tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["iteration"]) for r in rows if r["event"] == "cluster"] == [0, 2]
    assert (tmp_path / "labels" / "clusters-iter000002.h5").is_file()
    # best.pt: the lowest validation L_corr over the whole run (the paper), not only since the last clustering
    val = [(float(r["val_loss_corr"]), int(r["iteration"])) for r in rows
           if r["event"] == "val" and int(r["iteration"]) > 0]
    best = torch.load(tmp_path / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert len(val) >= 2 and best["iteration"] == min(val)[1]


def test_misspelt_key_rejected(tiny_corr_root):
    with pytest.raises(ValueError):
        merge_config(default_conf, overrides=["train.iteratons=3"])


def test_ppm_batchnorm_frozen(full_run):
    """train.freeze_ppm_bn (default): the pyramid-pooling BNs keep their initial running statistics, the rest
    of the network (batch statistics of the training pair) updates them."""
    out, _ = full_run
    sd = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    ppm = [k for k in sd if k.startswith("ppm.") and k.endswith("running_mean")]
    assert ppm
    for k in ppm:
        assert torch.equal(sd[k], torch.zeros_like(sd[k]))
        assert torch.equal(sd[k.replace("running_mean", "running_var")], torch.ones_like(sd[k]))
    assert not torch.equal(sd["bn5_4.running_mean"], torch.zeros_like(sd["bn5_4.running_mean"]))


def test_label_agreement_kappa_known_answers():
    # identical labellings with two equally frequent labels: p_o = 1, p_e = 0.5, kappa = 1
    assert label_agreement(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])) == (1.0, 1.0)
    # a constant labelling on one side: p_o = 0.5 = p_e, kappa = 0
    assert label_agreement(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])) == (0.5, 0.0)
    # both constant and equal: agreement 1 but no information
    assert label_agreement(np.array([3, 3]), np.array([3, 3])) == (1.0, 0.0)
    # p_o = 0.75, label frequencies a = (0.5, 0.5), b = (0.25, 0.75): p_e = 0.5, kappa = 0.5
    assert label_agreement(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])) == (0.75, 0.5)
    # labels present on one side only do not add chance agreement; swapped labels give kappa -1
    assert label_agreement(np.array([0, 1]), np.array([1, 0])) == (0.0, -1.0)
    assert label_agreement(np.array([5, 6]), np.array([7, 8])) == (0.0, 0.0)
    assert label_agreement(np.zeros(0), np.zeros(0)) == (0.0, 0.0)
    with pytest.raises(ValueError):
        label_agreement(np.zeros(2), np.zeros(3))


def test_killed_and_restored_run_matches_uninterrupted(tiny_corr_root, tmp_path):
    """``fgsn-loc train-fgsn --restore`` after a SIGKILL partway (issue 13): the same final weights, best.pt and
    metrics as an uninterrupted run (CPU training with one thread and per-iteration seeds repeats exactly); the
    resumed run starts at the killed run's last checkpoint, keeps its clustering and the metrics.csv rows logged
    before that checkpoint, and logs every later row once."""
    from omegaconf import OmegaConf

    from tests.killing import assert_same_training, cli, kill_experiment, restore_experiment

    conf = _conf(tiny_corr_root, **{"train.iterations": 6, "train.save_interval": 2, "train.val_interval": 6,
                                    "train.num_threads": 1, "model.feature_dim": 32})
    OmegaConf.save(conf, tmp_path / "tiny.yaml")

    def command(root, *flags):
        return cli("train-fgsn", tmp_path / "tiny.yaml", "--output-root", root, *flags)

    run = kill_experiment(command, tmp_path, conf.experiment)
    ref, out = run["ref"], run["out"]
    labels_mtime = (out / "labels" / "clusters-iter000000.h5").stat().st_mtime_ns
    assert 2 <= run["saved"]["iteration"] < 6
    restore_experiment(command, tmp_path, run["saved"])
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 6
    assert_same_training(**run)  # weights, metrics, metrics.csv rows once, the rows before the checkpoint kept, clean
    best_a = torch.load(ref / "checkpoints" / "best.pt", weights_only=True)
    best_b = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert best_b["best"] == best_a["best"] and best_b["iteration"] == best_a["iteration"]
    assert (out / "labels" / "clusters-iter000000.h5").stat().st_mtime_ns == labels_mtime  # no re-clustering


def test_ctrl_c_right_after_a_step_restores_without_repeating_it(tiny_corr_root, tmp_path, monkeypatch):
    """Ctrl-C (SIGINT) arriving just after an optimizer step: the checkpoint saved on interrupt holds that step
    and its iteration together, so ``--restore`` ends with the weights of an uninterrupted run (before
    fgsn.utils.interrupt, the interrupt landed before ``it += 1`` and the restored run applied the step twice)."""
    import signal

    torch.set_num_threads(1)
    conf = _conf(tiny_corr_root, **{"train.iterations": 5, "train.save_interval": 100, "train.val_interval": 100})
    ref = main(conf, tmp_path / "ref").parent / "last.pt"
    step, calls = torch.optim.SGD.step, []

    def step_then_ctrl_c(self, *a, **k):
        out = step(self, *a, **k)
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", step_then_ctrl_c)
    # Python's own Ctrl-C handler: a shell starts background jobs with SIGINT ignored, and Python keeps that
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            main(conf, tmp_path / "cut")
    finally:
        signal.signal(signal.SIGINT, old_handler)
    monkeypatch.setattr(torch.optim.SGD, "step", step)
    saved = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["iteration"] == 3
    main(conf, tmp_path / "cut", restore=True)
    a = torch.load(ref, weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert b["iteration"] == a["iteration"] == 5
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
