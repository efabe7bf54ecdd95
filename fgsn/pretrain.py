"""Semantic-segmentation pre-training of PSPNet (``fgsn-loc pretrain-seg``): the "Seg" initialisation.

The paper starts FGSN from a PSPNet trained on Cityscapes + Vistas (19 classes). This step produces an
equivalent initialisation here from a labelled street-segmentation set in the CamVid layout
(``fgsn.data.camvid``): random crops (with horizontal flips), cross-entropy + 0.4 x auxiliary cross-entropy,
SGD with a poly learning-rate schedule. The output checkpoint (``checkpoints/last.pt``, project layout) is a
valid ``init.checkpoint`` for ``train-fgsn`` (its classifier is replaced there).

Outputs under ``output_dir``: ``config.yaml``, ``log.txt``, ``metrics.csv`` (training loss / pixel accuracy,
validation pixel accuracy and mean IoU), ``checkpoints/last.pt`` (saved at every validation and at the end).
``--restore`` resumes from ``last.pt``; crops and dropout are seeded per iteration, so a resumed run, also one
killed at any point, repeats an uninterrupted one (the ``metrics.csv`` rows logged after ``last.pt`` are dropped
and logged again).
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from .data.camvid import CAMVID_CLASSES, CamVidDataset
from .models import PSPNet
from .segment import predict_scores, resolve_device
from .train import freeze_batchnorm
from .sliding import image_to_tensor
from .utils.checkpoint import save_checkpoint
from .utils.interrupt import deferred_interrupt
from .utils.config import DEVICE, add_experiment_arguments, between, merge_defaults, run_experiment, save_config
from .utils.logging import MetricsCSV, setup_logging
from .weights import load_state_dict_file, load_weights

logger = logging.getLogger(__name__)

default_conf = {
    "experiment": "seg-camvid",  # output folder name under outputs/pretrain-seg/
    "seed": 0,  # seeds crops and dropout
    "model": {**PSPNet.default_conf, "num_classes": len(CAMVID_CLASSES)},  # network (K = 11 CamVid classes)
    "init": {"checkpoint": None, "layout": "auto", "strict": True},  # optional ImageNet ("Class") weights
    "data": {
        "root": "???",  # CamVid-layout folder
        "train_split": "train",  # split list used for training
        "val_split": "val",  # split list used for validation
        "resize_short": 360,  # shorter side after resizing, pixels
        "crop_size": 713,  # training crop side, pixels
    },
    "inference": {"patch": 713, "step": 476, "batch_size": 4},  # sliding window for validation
    "train": {
        "iterations": 20000,  # iterations
        "batch_size": 4,  # crops per iteration
        "lr": 0.01,  # SGD learning rate (poly schedule, power 0.9)
        "momentum": 0.9,  # SGD momentum
        "weight_decay": 1e-4,  # L2 weight decay
        "log_interval": 50,  # iterations between training rows in metrics.csv
        "val_interval": 1000,  # iterations between validations
        "val_max_images": None,  # validate on the first N images; null = all
        "device": "auto",  # auto, cpu or cuda
        "num_threads": None,  # torch CPU threads; null = default
        "freeze_ppm_bn": False,  # keep the pyramid-pooling BatchNorms in eval mode (as fgsn.train; measured below)
    },
}
conf_checks = {  # utils.config.check_conf
    "model": PSPNet.conf_checks,
    "data": {"resize_short": between(1, integer=True), "crop_size": between(1, integer=True)},
    "inference": {"patch": between(1, integer=True), "step": between(1, integer=True),
                  "batch_size": between(1, integer=True)},
    "train": {"iterations": between(1, integer=True), "batch_size": between(1, integer=True),
              "lr": between(0, lo_open=True), "momentum": between(0, 1, hi_open=True), "weight_decay": between(0),
              "log_interval": between(1, integer=True), "val_interval": between(1, integer=True),
              "val_max_images": between(1, integer=True, optional=True), "device": DEVICE,
              "num_threads": between(1, integer=True, optional=True)},
}

FIELDS = ["iteration", "event", "loss", "pixel_acc", "lr", "val_pixel_acc", "val_miou", "elapsed_s"]


@torch.no_grad()
def evaluate_segmentation(model: PSPNet, data: CamVidDataset, inf, max_images: int | None = None) -> dict:
    """Pixel accuracy and mean IoU (over classes present in labels or predictions) with sliding windows."""
    model.eval()
    K = model.num_classes
    conf_mat = np.zeros((K, K), np.int64)
    n = len(data) if not max_images else min(max_images, len(data))
    for i in tqdm(range(n), desc="val", leave=False):
        img, lab = data[i]
        pred = predict_scores(model, img, inf.patch, inf.step, inf.batch_size).argmax(0).cpu().numpy()
        ok = lab >= 0
        conf_mat += np.bincount(lab[ok] * K + pred[ok], minlength=K * K).reshape(K, K)
    tp = np.diag(conf_mat)
    union = conf_mat.sum(0) + conf_mat.sum(1) - tp
    iou = tp[union > 0] / union[union > 0]
    return {"val_pixel_acc": float(tp.sum() / max(conf_mat.sum(), 1)), "val_miou": float(iou.mean()) if len(iou) else 0.0}


def main(conf, output_dir: str | Path, restore: bool = False) -> Path:
    """Pre-train PSPNet for semantic segmentation; returns the path of ``checkpoints/last.pt``."""
    conf = merge_defaults(default_conf, conf, conf_checks, "pre-training configuration")
    output_dir = Path(output_dir)
    (output_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    setup_logging(output_dir / "log.txt")
    save_config(conf, output_dir / "config.yaml")
    t = conf.train
    if t.num_threads:
        torch.set_num_threads(int(t.num_threads))
    dev = resolve_device(t.device)
    train = CamVidDataset(conf.data.root, conf.data.train_split, conf.data.resize_short)
    val = CamVidDataset(conf.data.root, conf.data.val_split, conf.data.resize_short)
    torch.manual_seed(conf.seed)  # the random initialisation
    model = PSPNet(conf.model)
    if conf.init.checkpoint:
        load_weights(model, load_state_dict_file(conf.init.checkpoint), conf.init.layout, conf.init.strict,
                     skip_classifier=True)
    model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    it, last = 0, output_dir / "checkpoints" / "last.pt"
    metrics: dict = {}
    run: list[list[float]] = []  # (loss, pixel accuracy) of the iterations since the last logged row
    csv_log = MetricsCSV(output_dir / "metrics.csv", FIELDS)
    if restore and last.exists():
        ck = torch.load(last, map_location=dev, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        it, metrics = ck["iteration"], ck["metrics"]
        if "log_rows" in ck:  # rows logged after the checkpoint are logged again from here
            csv_log.truncate(ck["log_rows"][csv_log.path.name])
            run = [list(r) for r in ck["log_running"]]
        logger.info("Restored %s at iteration %d", last, it)
    else:
        if restore:
            logger.warning("--restore: no checkpoint at %s, starting from scratch", last)
        csv_log.truncate(0)  # a run from scratch starts its log afresh (also after a kill before the first checkpoint)
    log = csv_log.write

    def save():
        ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": it, "metrics": metrics,
              "config": OmegaConf.to_container(conf, resolve=True), "log_rows": {csv_log.path.name: csv_log.rows},
              "log_running": run}
        save_checkpoint(ck, last)

    t0 = time.time()
    try:
        while it < t.iterations:
            rng = np.random.default_rng([conf.seed, it])
            torch.manual_seed(conf.seed * 1000003 + it)
            lr = t.lr * (1 - it / t.iterations) ** 0.9
            for g in opt.param_groups:
                g["lr"] = lr
            model.train()
            if t.freeze_ppm_bn:
                freeze_batchnorm(model.ppm)
            crops = [train.random_crop(int(i), conf.data.crop_size, rng) for i in rng.integers(len(train), size=t.batch_size)]
            x = torch.stack([image_to_tensor(c[0]) for c in crops]).to(dev)
            y = torch.stack([torch.from_numpy(c[1]) for c in crops]).to(dev)
            pred = model({"image": x})
            losses, m = model.loss(pred, {"labels": y})
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            with deferred_interrupt():  # the update and the counter that records it, whole (Ctrl-C waits)
                opt.step()
                it += 1
                run.append([float(losses["total"].detach()), float(m["pixel_acc"])])
            if it % t.log_interval == 0 or it == t.iterations:
                a = np.mean(run, 0)
                run = []
                log({"iteration": it, "event": "train", "loss": a[0], "pixel_acc": a[1], "lr": lr,
                     "elapsed_s": round(time.time() - t0, 1)})
                logger.info("[it %d] loss %.4f, pixel acc %.3f", it, a[0], a[1])
            if it % t.val_interval == 0 or it == t.iterations:
                v = evaluate_segmentation(model, val, conf.inference, t.val_max_images)
                metrics.update(v)
                log({"iteration": it, "event": "val", **v, "elapsed_s": round(time.time() - t0, 1)})
                logger.info("[it %d] val pixel acc %.3f, mIoU %.3f", it, v["val_pixel_acc"], v["val_miou"])
                save()
    except KeyboardInterrupt:
        logger.warning("Interrupted at iteration %d: saving %s", it, last)
        save()
        raise
    save()
    return last


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_arguments(parser, "configs/fgsn/pretrain-seg-cpu.yaml", "outputs/pretrain-seg", "train.iterations=100")


def run(args) -> int:
    return run_experiment(args, default_conf, main, conf_checks)
