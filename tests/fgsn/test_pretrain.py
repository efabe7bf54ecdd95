"""Semantic pre-training (``fgsn-loc pretrain-seg``) on a CamVid-layout folder built in the test."""
import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fgsn import pretrain


@pytest.fixture
def camvid_tiny(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "camvid"
    for split, n in (("train", 3), ("val", 2)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        lines = []
        for i in range(n):
            cv2.imwrite(str(root / split / f"{i}.png"), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
            lab = np.repeat(np.arange(12, dtype=np.uint8), 4)[None].repeat(40, 0)  # columns of classes, void = 11
            cv2.imwrite(str(root / f"{split}annot" / f"{i}.png"), lab)
            lines.append(f"{split}/{i}.png {split}annot/{i}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _conf(root, **train):
    return OmegaConf.merge(OmegaConf.create(pretrain.default_conf), {
        "model": {"depth": 18, "num_classes": 11}, "data": {"root": str(root), "resize_short": 32, "crop_size": 32},
        "inference": {"patch": 32, "step": 32, "batch_size": 2},
        "train": {"iterations": 2, "batch_size": 2, "log_interval": 1, "val_interval": 2, "num_threads": 1, **train}})


@pytest.mark.parametrize("freeze", [False, True])
def test_pretrain_writes_checkpoint_and_freezes_ppm_bn(tmp_path, camvid_tiny, freeze):
    last = pretrain.main(_conf(camvid_tiny, freeze_ppm_bn=freeze), tmp_path / "out")
    state = torch.load(last, weights_only=True)["model"]
    assert (tmp_path / "out" / "metrics.csv").read_text().count("val") >= 1
    ppm = [k for k in state if k.startswith("ppm.") and k.endswith("running_var")]
    rest = [k for k in state if not k.startswith("ppm.") and k.endswith("running_var")]
    assert ppm and rest
    # the pyramid-pooling BN statistics stay at their initial values (1) only when frozen; the others always move
    assert all(torch.equal(state[k], torch.ones_like(state[k])) for k in ppm) == freeze
    assert not all(torch.equal(state[k], torch.ones_like(state[k])) for k in rest)


def test_killed_and_restored_run_matches_uninterrupted(tmp_path, camvid_tiny):
    """``fgsn-loc pretrain-seg --restore`` after a SIGKILL partway (issue 13): the same final weights and metrics as
    an uninterrupted run (CPU, one thread, crops and dropout seeded per iteration: training repeats exactly); the
    resumed run starts at the last checkpoint (saved at each validation), keeps the rows logged before it and logs
    every later row once."""
    from tests.killing import assert_same_training, cli, kill_experiment, restore_experiment

    conf = _conf(camvid_tiny, iterations=6, val_interval=2)
    conf.model.feature_dim = 32
    OmegaConf.save(conf, tmp_path / "tiny.yaml")

    def command(root, *flags):
        return cli("pretrain-seg", tmp_path / "tiny.yaml", "--output-root", root, *flags)

    run = kill_experiment(command, tmp_path, conf.experiment)
    assert run["saved"]["iteration"] in (2, 4)
    restore_experiment(command, tmp_path, run["saved"])
    assert torch.load(run["out"] / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 6
    assert_same_training(**run)
