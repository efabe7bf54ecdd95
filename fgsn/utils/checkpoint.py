"""The one checkpoint writer of the project's trainers (FGSN training and pre-training, the APR baselines).

Layout (glue-factory style): a plain dict, written with ``torch.save`` and read back with
``torch.load(path, map_location=..., weights_only=True)``, so it may hold only tensors, numbers, strings,
``None`` and lists / dicts of them:

    model:      the network's ``state_dict()``.
    optimizer:  the optimizer's ``state_dict()``.
    scheduler:  the LR scheduler's ``state_dict()`` or ``None`` (APR; the FGSN trainers compute the learning rate
                from ``iteration`` and write no such key).
    config:     the merged configuration as a plain container (``OmegaConf.to_container(conf, resolve=True)``).
    iteration:  the number of optimisation steps done (``--restore`` resumes after it).
    metrics:    the latest logged / validation metrics, ``{name: float}``.

    log_rows:   ``{CSV file name: data rows}`` of the run's metric files when the checkpoint was written
                (:class:`fgsn.utils.logging.MetricsCSV`); ``--restore`` cuts each file back to it, so the rows logged
                after the checkpoint, which the resumed run logs again, appear once. Absent in older checkpoints.

plus keys of each trainer: ``fgsn.train`` ``cluster_state``, ``cluster_iteration``, ``labels_file``, ``best``,
``log_running`` (training losses since the last logged row); ``fgsn.pretrain`` ``log_running``;
``localization.apr.train`` ``pose_stats``, ``map_ids``, ``final`` (``metrics`` are the final test errors).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .io import atomic_path

REQUIRED_KEYS = ("model", "optimizer", "config", "iteration", "metrics")


def save_checkpoint(ckpt: dict, path: str | Path) -> Path:
    """Write a checkpoint atomically (:func:`fgsn.utils.io.atomic_path`): a failed or interrupted write leaves the
    previous file at ``path`` intact.

    Args:
        ckpt: the checkpoint dict (layout in the module docstring).
        path: output file; its folder is created.
    Returns:
        ``path``.
    Raises:
        ValueError: a key of the common layout is missing (named in the message).
    """
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint for {path} lacks the keys {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path
