"""Training and testing of the APR baselines: ``fgsn-loc train-apr CONFIG [key=value ...] [--restore]``.

Outputs (``<output_root>/<experiment>/``, default ``outputs/apr/<experiment>/``)::

    config.yaml               the merged configuration (written before any work)
    log.txt                   the run's log
    metrics.csv               one row per logged iteration: iteration, lr, seconds, loss terms, batch metrics
    eval.csv                  one row per evaluation: median / mean test errors (metres, degrees)
    metrics.json              final test errors and the mean-training-pose baseline
    checkpoints/checkpoint_<iteration>.pt, checkpoints/checkpoint_last.pt

A checkpoint is a dict (``torch.load(..., weights_only=True)``): ``model`` (state dict, includes the
position statistics as buffers), ``optimizer``, ``scheduler``, ``config`` (plain dict), ``iteration``,
``metrics``, ``pose_stats`` (``{"mean": [3 floats, metres], "scale": metres, "qvec": [4 floats]}``, the last the
mean training rotation), ``map_ids``.

Batches are drawn independently per iteration from a generator seeded by (seed, iteration), and augmentation
by (seed, iteration, index), so a resumed run (``--restore``) sees the same batches as an uninterrupted one, also
after a kill at any point: checkpoints and ``metrics.json`` are written atomically, and the ``metrics.csv`` /
``eval.csv`` rows logged after the restored checkpoint are dropped and logged again (each appears once); a
restored final checkpoint (``final``, written after the test evaluation) is not tested again. A run from scratch
starts both CSV files afresh. Ctrl-C finishes the current iteration, saves a checkpoint and stops.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fgsn.utils.checkpoint import save_checkpoint
from fgsn.utils.config import Check, between, list_of, merge_config, one_of, save_config
from fgsn.utils.io import write_text_atomic
from fgsn.utils.interrupt import deferred_interrupt
from fgsn.utils.logging import MetricsCSV, eta, setup_logging
from reconstruction.geometry import pose_errors

from .data import APRDataset, PoseRecord, PoseStats, mean_pose, read_split
from .inference import predict_images
from .models import get_model
from .pose import pose_to_cam_from_world

logger = logging.getLogger(__name__)

default_conf: dict[str, Any] = {
    "experiment": "???",  # output folder name under output_root
    "output_root": "outputs/apr",  # stage folder
    "seed": 0,  # seeds model init, batch sampling and augmentation
    "device": "cpu",  # "cpu" or "cuda"
    "num_threads": 1,  # torch CPU threads (shared machines: keep 1)
    "data": {
        "format": "cmu",  # "7scenes", "cambridge", "cmu" (also the demo dataset) or "robotcar"
        "root": "???",  # dataset root (7-Scenes / Cambridge: one scene folder)
        "slices": None,  # CMU slices to read (list); the training images must form one map
        "position_norm": "rms",  # "rms": (C - mean) / RMS distance; "none": C - mean (metres)
        "image_size": 256,  # shorter image side after resizing, pixels
        "crop_size": [256, 256],  # (height, width) of random (train) / centre (test) crops, pixels
        "steps": 1,  # frames per training window (AtLoc+: 3, VLocNet: 3)
        "skip": 10,  # frames between window frames
        "jitter": [0.0, 0.0, 0.0, 0.0],  # ColorJitter brightness, contrast, saturation, hue (AtLoc outdoor: .7 .7 .7 .5)
        "cache_images": True,  # keep resized training images in memory
        "holdout_every": 0,  # >0: every N-th training image (per sequence) becomes a same-condition validation split
    },
    "model": {"name": "???"},  # model section; defaults from the model class (localization.apr.models)
    "train": {
        "iterations": 1000,  # optimisation steps
        "batch_size": 64,  # windows per step
        "optimizer": "adam",  # "adam" or "sgd"
        "lr": 5e-5,  # learning rate
        "weight_decay": 0.0,  # L2 weight decay
        "lr_schedule": "step",  # "step": x lr_gamma every lr_step iterations; "poly": x (1 - it / iterations)^lr_power
        "lr_step": 0,  # step schedule: iterations between learning-rate decays (0: constant)
        "lr_gamma": 0.1,  # step schedule: decay factor
        "lr_power": 0.9,  # poly schedule: exponent
        "grad_clip": 0.0,  # max gradient norm (0: off)
        "log_every": 10,  # iterations between metrics.csv rows
        "eval_every": 0,  # iterations between test evaluations (0: only at the end)
        "save_every": 500,  # iterations between checkpoints (one is always written at the end)
        "num_workers": 0,  # data-loading processes
        "eval_batch_size": 16,  # images per inference batch
    },
}


_COUNT, _POSITIVE = between(1, integer=True), between(0, lo_open=True)
conf_checks = {  # fgsn.utils.config.check_conf; the model section: the model class's conf_checks, else inferred
    "device": Check(lambda v: isinstance(v, str) and re.fullmatch(r"cpu|cuda(:\d+)?", v) is not None,
                    "cpu, cuda or cuda:N"),
    "num_threads": _COUNT,
    "data": {"format": one_of("7scenes", "cambridge", "cmu", "robotcar"), "position_norm": one_of("rms", "none"),
             "image_size": _COUNT, "crop_size": list_of(_COUNT, 2), "steps": _COUNT, "skip": _COUNT,
             "jitter": list_of(between(0), 4), "holdout_every": between(0, integer=True)},
    "train": {"iterations": _COUNT, "batch_size": _COUNT, "optimizer": one_of("adam", "sgd"), "lr": _POSITIVE,
              "weight_decay": between(0), "lr_schedule": one_of("step", "poly"), "lr_step": between(0, integer=True),
              "lr_gamma": _POSITIVE, "lr_power": between(0), "grad_clip": between(0), "log_every": _COUNT,
              "eval_every": between(0, integer=True), "save_every": between(0, integer=True),
              "num_workers": between(0, integer=True), "eval_batch_size": _COUNT},
}


def build_conf(config: str | Path | None, overrides: Sequence[str] = (), restore_from: DictConfig | None = None) -> DictConfig:
    """Merge the defaults, the model's defaults, a YAML file and ``key=value`` overrides (struct mode).

    The model's defaults are chosen by ``model.name`` (from the overrides, else the YAML file, else the
    restored configuration).
    """
    name = None
    for o in overrides:
        if o.startswith("model.name="):
            name = o.split("=", 1)[1]
    if name is None and config is not None:
        y = OmegaConf.load(config) if Path(config).is_file() else {}
        name = OmegaConf.select(OmegaConf.create(y), "model.name") if y else None
    if name is None and restore_from is not None:
        name = restore_from.model.name
    if name is None or name == "???":
        raise ValueError("model.name is not set (in the config file or as model.name=...)")
    cls = get_model(name)
    model_defaults = OmegaConf.merge(OmegaConf.create(cls.base_default_conf), OmegaConf.create(cls.default_conf))
    model_defaults.name = name
    defaults = OmegaConf.create(default_conf)
    OmegaConf.set_struct(defaults, False)
    defaults.model = model_defaults
    if restore_from is not None:
        defaults = OmegaConf.merge(defaults, restore_from)
    checks = {**conf_checks, "model": getattr(cls, "conf_checks", {})}
    return merge_config(defaults, yaml_path=config, overrides=overrides, checks=checks)


class _IterationSampler(torch.utils.data.Sampler):
    """Yields, for iterations ``start..end-1``, a batch of (index, iteration) pairs drawn from (seed, iteration)."""

    def __init__(self, n: int, batch_size: int, start: int, end: int, seed: int):
        self.n, self.batch_size, self.start, self.end, self.seed = n, batch_size, start, end, seed

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self):
        for it in range(self.start, self.end):
            rng = np.random.default_rng([self.seed, it])
            idx = rng.choice(self.n, self.batch_size, replace=self.n < self.batch_size)
            yield [(int(i), it) for i in idx]


class _IterDataset(torch.utils.data.Dataset):
    def __init__(self, ds: APRDataset):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        index, it = key
        self.ds.epoch = it
        return self.ds[index]


def quick_errors(positions: np.ndarray, qvecs: np.ndarray, records: Sequence[PoseRecord]) -> dict[str, float]:
    """Median / mean position (m) and rotation (deg) errors against the records' poses.

    Uses the error definitions of ``evaluation/evaluate.py`` (:func:`reconstruction.geometry.pose_errors`); the
    benchmark tables (recall at the three thresholds) come from ``fgsn-loc localize --method apr`` followed by
    ``fgsn-loc evaluate``.
    """
    est = np.stack([pose_to_cam_from_world(p, q) for p, q in zip(positions, qvecs)])
    gt = np.stack([pose_to_cam_from_world(r.position, r.qvec) for r in records])
    err_t, err_R = pose_errors(est, gt)
    return {"median_t_m": float(np.median(err_t)), "median_R_deg": float(np.median(err_R)),
            "mean_t_m": float(np.mean(err_t)), "mean_R_deg": float(np.mean(err_R)), "num_images": len(records)}


def split_holdout(records: Sequence[PoseRecord], every: int) -> tuple[list[PoseRecord], list[PoseRecord]]:
    """Hold out every ``every``-th image of each sequence (in temporal order, starting at ``every // 2``) as a
    validation split of the training condition; ``every`` = 0 holds out nothing."""
    if every <= 0:
        return list(records), []
    by_seq: dict[str, list[PoseRecord]] = {}
    for r in records:
        by_seq.setdefault(r.sequence, []).append(r)
    held = set()
    for seq in by_seq.values():
        seq.sort(key=lambda r: r.order)
        held.update(id(r) for r in seq[every // 2::every])
    return [r for r in records if id(r) not in held], [r for r in records if id(r) in held]


def evaluate_model(model, records: Sequence[PoseRecord], conf: DictConfig) -> dict[str, float]:
    """Test errors of ``model`` on ``records`` with the test transform of ``conf.data``."""
    was_training = model.training
    pos, q = predict_images(model, [r.path for r in records], [r.sequence for r in records],
                            [r.order for r in records], conf.data.image_size, conf.data.crop_size,
                            conf.train.eval_batch_size, progress=False)
    model.train(was_training)
    return quick_errors(pos, q, records)


def _evaluate_all(model, test_records, val_records, conf) -> dict[str, float]:
    metrics = evaluate_model(model, test_records, conf)
    if val_records:
        metrics.update({f"val_{k}": v for k, v in evaluate_model(model, val_records, conf).items()})
    return metrics


def make_optimizer(model, tc: DictConfig):
    """The optimizer over ``model.param_groups(tc)`` and the learning-rate scheduler of ``tc`` (``train`` section).

    Schedules, stepped once per iteration (the rate of iteration ``it``, 0-based, is base rate x factor(it)):
    ``step``: factor lr_gamma^(it // lr_step) (constant when ``lr_step`` = 0: no scheduler); ``poly``: factor
    (1 - it / iterations)^lr_power (0 at ``iterations``), per group, so groups keep their ratio. The scheduler's
    state (its iteration count and base rates) goes into the checkpoint; ``--restore`` continues the schedule.

    Returns:
        optimizer, scheduler (None for a constant rate).
    Raises:
        ValueError: unknown ``optimizer`` or ``lr_schedule``.
    """
    groups = model.param_groups(tc)
    if tc.optimizer == "adam":
        optimizer = torch.optim.Adam(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    elif tc.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=tc.lr, momentum=0.9, weight_decay=tc.weight_decay)
    else:
        raise ValueError(f"train.optimizer must be 'adam' or 'sgd', got {tc.optimizer!r}")
    if tc.lr_schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, tc.lr_step, tc.lr_gamma) if tc.lr_step > 0 else None
    elif tc.lr_schedule == "poly":
        scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, int(tc.iterations), float(tc.lr_power))
    else:
        raise ValueError(f"train.lr_schedule must be 'step' or 'poly', got {tc.lr_schedule!r}")
    return optimizer, scheduler


def _checkpoint(model, optimizer, scheduler, conf, iteration, metrics, stats, map_ids,
                logs: Sequence[MetricsCSV] = (), final: bool = False) -> dict[str, Any]:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "config": OmegaConf.to_container(conf, resolve=True), "iteration": int(iteration),
            "metrics": {k: float(v) for k, v in metrics.items()}, "pose_stats": stats.to_dict(),
            "map_ids": list(map_ids), "log_rows": {log.path.name: log.rows for log in logs}, "final": final}


def _save(ckpt: dict, ckpt_dir: Path) -> Path:
    """Write ``checkpoint_<iteration>.pt`` and ``checkpoint_last.pt``, each atomically; returns the first."""
    path = save_checkpoint(ckpt, ckpt_dir / f"checkpoint_{ckpt['iteration']:06d}.pt")
    save_checkpoint(ckpt, ckpt_dir / "checkpoint_last.pt")
    logger.info("Saved checkpoint %s.", path)
    return path


def main(conf: DictConfig, restore: bool = False) -> Path:
    """Train an APR model and evaluate it on the test split.

    Args:
        conf: the merged configuration (see :data:`default_conf` and the model's ``default_conf``).
        restore: resume from ``checkpoints/checkpoint_last.pt`` of the experiment folder.
    Returns:
        The experiment folder.
    Raises:
        FileNotFoundError: ``restore`` without a checkpoint. DatasetError: bad dataset files.
    """
    out = Path(conf.output_root) / conf.experiment
    ckpt_dir = out / "checkpoints"
    save_config(conf, out / "config.yaml")
    setup_logging(out / "log.txt")
    torch.set_num_threads(int(conf.num_threads))
    torch.manual_seed(conf.seed)
    device = torch.device(conf.device)

    train_records = read_split(conf.data, "train")
    test_records = read_split(conf.data, "test")
    train_records, val_records = split_holdout(train_records, conf.data.holdout_every)
    stats = PoseStats.from_records(train_records, conf.data.position_norm)
    map_ids = sorted({r.map_id for r in train_records})
    logger.info("%d training, %d validation and %d test images; position mean %s m, scale %.3f m.", len(train_records),
                len(val_records), len(test_records), np.round(stats.mean, 3).tolist(), stats.scale)

    model = get_model(conf.model.name)(conf.model)
    model.set_pose_stats(stats.mean, stats.scale, stats.qvec)
    model.to(device)
    tc = conf.train
    optimizer, scheduler = make_optimizer(model, tc)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    start, metrics, tested = 0, {}, False  # tested: metrics are the final test errors (of a restored final checkpoint)
    train_log, eval_log = MetricsCSV(out / "metrics.csv"), MetricsCSV(out / "eval.csv")
    if restore:
        last = ckpt_dir / "checkpoint_last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"--restore: no checkpoint at {last}")
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
        start, metrics, tested = int(ckpt["iteration"]), dict(ckpt["metrics"]), bool(ckpt.get("final", False))
        for log in (train_log, eval_log):  # rows logged after the checkpoint are logged again from here
            if log.path.name in ckpt.get("log_rows", {}):
                log.truncate(ckpt["log_rows"][log.path.name])
        logger.info("Restored %s at iteration %d.", last, start)
    else:  # a run from scratch starts its logs afresh (also after a kill before the first checkpoint)
        train_log.truncate(0)
        eval_log.truncate(0)
    logs = (train_log, eval_log)

    window = max(conf.data.steps, 1)
    if window < model.window:
        raise ValueError(f"model {conf.model.name} needs data.steps >= {model.window}, got {conf.data.steps}")
    train_ds = APRDataset(train_records, stats, conf.data, train=True, seed=conf.seed)
    sampler = _IterationSampler(len(train_ds), tc.batch_size, start, tc.iterations, conf.seed)
    loader = torch.utils.data.DataLoader(_IterDataset(train_ds), batch_sampler=sampler, num_workers=tc.num_workers)

    it = start
    t0 = time.time()
    model.train()
    try:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            model.iteration = it  # the step about to be taken (VLocNet alternates its two tasks by it)
            torch.manual_seed(conf.seed * 1000003 + it)  # dropout, VLocNet's previous-pose noise: per step, so
            # that --restore draws what an uninterrupted run draws
            pred = model(batch)
            losses, batch_metrics = model.loss(pred, batch)
            optimizer.zero_grad()
            losses["total"].backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            with deferred_interrupt():  # the update and the counter that records it, whole (Ctrl-C waits)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                it += 1
            if not torch.isfinite(losses["total"]):
                raise FloatingPointError(f"non-finite loss at iteration {it}: {float(losses['total'])}")
            if it % tc.log_every == 0 or it == tc.iterations:
                row = {"iteration": it, "lr": optimizer.param_groups[0]["lr"], "time_s": round(time.time() - t0, 2)}
                row.update({f"loss/{k}": float(v.detach()) for k, v in losses.items()})
                row.update({k: float(v) for k, v in batch_metrics.items()})
                train_log.write(row)
                logger.info("[it %d / %d] %s, %s", it, tc.iterations, " ".join(
                    f"{k}={v:.4g}" for k, v in row.items() if k not in ("iteration",)),
                    eta(time.time() - t0, it - start, tc.iterations - start))
            if tc.eval_every > 0 and it % tc.eval_every == 0 and it < tc.iterations:
                metrics = _evaluate_all(model, test_records, val_records, conf)
                eval_log.write({"iteration": it, **metrics})
                logger.info("[it %d] test: %s", it, metrics)
            if tc.save_every > 0 and it % tc.save_every == 0 and it < tc.iterations:
                _save(_checkpoint(model, optimizer, scheduler, conf, it, metrics, stats, map_ids, logs), ckpt_dir)
    except KeyboardInterrupt:
        logger.warning("Interrupted: saving iteration %d and stopping.", it)
        _save(_checkpoint(model, optimizer, scheduler, conf, it, metrics, stats, map_ids, logs), ckpt_dir)
        return out

    if not (tested and it == start):  # a restored final checkpoint holds the test errors already
        metrics = _evaluate_all(model, test_records, val_records, conf)
        eval_log.write({"iteration": it, **metrics})
        _save(_checkpoint(model, optimizer, scheduler, conf, it, metrics, stats, map_ids, logs, final=True), ckpt_dir)
    p0, q0 = mean_pose(train_records)
    baseline = quick_errors(np.tile(p0, (len(test_records), 1)), np.tile(q0, (len(test_records), 1)), test_records)
    if val_records:
        vb = quick_errors(np.tile(p0, (len(val_records), 1)), np.tile(q0, (len(val_records), 1)), val_records)
        baseline.update({f"val_{k}": v for k, v in vb.items()})
    per_condition = {}
    for seq in sorted({r.sequence for r in test_records}):
        recs = [r for r in test_records if r.sequence == seq]
        n = len(recs)
        per_condition[seq] = {"model": evaluate_model(model, recs, conf),
                              "mean_pose": quick_errors(np.tile(p0, (n, 1)), np.tile(q0, (n, 1)), recs)}
    summary = {"iteration": it, "test": metrics, "mean_pose_baseline": baseline, "test_per_sequence": per_condition,
               "train_images": len(train_records), "val_images": len(val_records), "test_images": len(test_records),
               "train_time_s": round(time.time() - t0, 1)}
    write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2))
    logger.info("Test: median %.3f m / %.2f deg (mean-pose baseline: %.3f m / %.2f deg).", metrics["median_t_m"],
                metrics["median_R_deg"], baseline["median_t_m"], baseline["median_R_deg"])
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, help="YAML preset (e.g. configs/apr/atloc_cpu.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. experiment=atloc-demo train.lr=1e-4")
    parser.add_argument("--restore", action="store_true", help="resume from the experiment's checkpoint_last.pt")


def run(args: argparse.Namespace) -> None:
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).is_file():
        config, overrides = None, [config] + overrides
    restore_from = None
    if args.restore:
        probe = build_conf(config, overrides)
        saved = Path(probe.output_root) / probe.experiment / "config.yaml"
        if saved.is_file():
            restore_from = OmegaConf.load(saved)
    conf = build_conf(config, overrides, restore_from)
    main(conf, restore=args.restore)
